"""The import contracts stay complete: every private module of the core is forbidden to the apps."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_core_module_but_the_plugin_surface_is_forbidden_to_the_action_apps():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["id"] == "plugin-surface")
    core = ROOT / "imageactions"
    modules = {
        f"imageactions.{path.stem if path.is_file() else path.name}"
        for path in core.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert modules - set(contract["forbidden_modules"]) == {"imageactions.pipeline"}


def test_every_action_app_is_under_the_contracts():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    apps = {path.name for path in ROOT.glob("actions_*") if (path / "apps.py").exists()}
    contracts = {c["id"]: c for c in config["contracts"]}
    assert set(contracts["plugin-surface"]["source_modules"]) == apps
    assert set(contracts["core-knows-no-action-type"]["forbidden_modules"]) == apps
    assert apps <= set(config["root_packages"])
