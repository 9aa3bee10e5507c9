import pytest

from toolkit.config import compose_train_config
from toolkit.training.train import train

# the embedded demo's config (transformer_tiny, 20k toy pairs), 3 epochs instead of 5
TRAIN = ["optimization.max_epoch=3", "common.log_format=none", "common.tensorboard_dir=null"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny model trained on the toy corpus (about 70 s), shared by the generation tests."""
    save_dir = tmp_path_factory.mktemp("toy-run")
    train(compose_train_config([*TRAIN, f"checkpoint.save_dir={save_dir}"]))
    return save_dir
