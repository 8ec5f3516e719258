"""Every impossible value of the task suite's keys is refused before any work, naming the fix."""

import pytest

from src.config.checks import check_config
from src.config.errors import ConfigError
from src.config.instantiate import instantiate_group

REFUSED = [
    (["data=adding", "data.seq_len=10"], "data.seq_len=10 is too short.*data.seq_len=20 or more"),
    (["data=adding", "data.variant=modern", "data.seq_len=1"], "data.seq_len=2 or more"),
    (["data=temporal_order", "data.seq_len=5"], "data.seq_len=10 or more"),
    (["data=temporal_order", "data.variant=6c"], "among 6a, 6b"),
    (["data=copy", "model.tbptt_steps=0"], "model.tbptt_steps=0 is not allowed"),
    (["data=copy", "model.tbptt_steps=121"], "longer than the sequences.*120 steps"),
    (["data=mnist", "data.mode=pixel", "model.tbptt_steps=785"], "between 1 and 784"),
    (["data=adding", "model.tbptt_steps=10"], "differ in length.*data.variant=modern"),
    (["data=multiply", "model.head=every_step"], "one target per sequence.*model.head=last"),
    (["data=reber", "model.head=last"], "target at every step.*model.head=every_step"),
    (["data=copy", "data.categories=1"], "data.categories=1 is not allowed: it must be >= 2"),
    (["data=copy", "data.categories=4"], "data.input_size=6 data.num_classes=5"),
    (["data=adding", "data.regime=sometimes"], "data.regime.*among fixed, online"),
    (["data=reber", "model.bidirectional=true", "model.tbptt_steps=2"], "unidirectional"),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_an_impossible_task_config_is_refused_with_its_fix(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose_cfg(*overrides))


@pytest.mark.parametrize(
    "task", ["adding", "temporal_order", "reber", "copy", "chars", "multiply", "mnist"]
)
def test_every_task_config_as_committed_passes(compose_cfg, task):
    check_config(compose_cfg(f"data={task}"))


def test_an_empty_text_is_refused_when_the_data_is_built(compose_cfg):
    cfg = compose_cfg("data=chars", "data.text=''")
    with pytest.raises(ConfigError, match="data: the config was refused: the text to learn is"):
        instantiate_group(cfg.data, "data")
