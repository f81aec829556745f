# Sourced by scripts/serve and scripts/test: the project's virtual environment in .venv.
#
# ensure_venv SPEC  creates .venv with the `python3` found on PATH (3.11 or newer) when it
# is missing or broken, and runs `pip install -e SPEC` (e.g. "." or ".[test]") when
# pyproject.toml or SPEC changed since the last install, so a second run takes seconds.

ensure_venv() {
    local spec="$1" root venv python stamp fingerprint wanted installed
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    venv="$root/.venv"
    python="$venv/bin/python"

    if ! command -v python3 >/dev/null 2>&1; then
        echo "python3 was not found on PATH; ImageActions needs Python 3.11 or newer." >&2
        return 1
    fi
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "python3 on PATH is $(python3 --version 2>&1) ($(command -v python3)); ImageActions needs 3.11 or newer." >&2
        return 1
    fi

    # A venv whose interpreter is gone or too old (moved checkout, removed pyenv version) is rebuilt.
    if [ -d "$venv" ] && ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "[venv] $venv is broken or too old: recreating it" >&2
        rm -rf "$venv"
    fi
    if [ ! -x "$python" ]; then
        echo "[venv] creating $venv with $(python3 --version 2>&1)" >&2
        python3 -m venv "$venv" || {
            echo "Could not create $venv; on Debian install the venv module: apt-get install python3-venv" >&2
            return 1
        }
    fi

    stamp="$venv/.imageactions-installed"
    fingerprint="$(sha256sum < "$root/pyproject.toml" | cut -d' ' -f1) $("$python" -V 2>&1)"
    wanted="$spec $fingerprint"
    if [ -f "$stamp" ] && "$python" -c 'import django, imageactions' 2>/dev/null; then
        installed="$(cat "$stamp")"
        # An install with the test extras also satisfies a plain one.
        if [ "$installed" = "$wanted" ] || { [ "$spec" = "." ] && [ "$installed" = ".[test] $fingerprint" ]; }; then
            return 0
        fi
    fi
    echo "[venv] pip install -e '$spec' (dependencies from pyproject.toml)" >&2
    (cd "$root" && "$python" -m pip install -q --disable-pip-version-check --no-input -e "$spec") >&2
    echo "$wanted" > "$stamp"
}
