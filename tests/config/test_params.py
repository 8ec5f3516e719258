import shutil

from src.config.params import PARAMS_FILE, compose_params, main, stale_diff
from tests.conftest import CONF


def test_committed_params_yaml_is_what_conf_composes_to():
    # dvc repro reads params.yaml as it is: a stale one would silently win over conf/.
    assert stale_diff(PARAMS_FILE, compose_params([])) == "", "run `python -m src.config.params`"
    assert main(["--check"]) == 0


def test_check_fails_with_a_diff_when_conf_changes_without_recomposing(tmp_path, capsys):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    model = conf / "model" / "_base.yaml"
    model.write_text(model.read_text().replace("init: keras", "init: torch"))
    diff = stale_diff(PARAMS_FILE, compose_params([], config_dir=conf))
    assert "-  init: keras" in diff and "+  init: torch" in diff

    stale = tmp_path / "params.yaml"
    stale.write_text(PARAMS_FILE.read_text().replace("seed: 42", "seed: 43"))
    assert main(["--check", "--params-file", str(stale)]) == 1
    assert "+seed: 42" in capsys.readouterr().out


def test_overrides_compose_as_dvc_exp_run_does():
    quick = compose_params(["profile=quick", "model=lstm"])
    assert "profile: quick" in quick and "cell: lstm" in quick and "max_epochs: 2" in quick
