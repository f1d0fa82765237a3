#!/usr/bin/env bash
# Prints the python3 that tools/figures.py should run with: .venv-figures (Debian's numpy and
# matplotlib plus umap-learn, made by `EQUIVAE_WITH_UMAP=1 bash tools/setup.sh`), else the first
# python3 on PATH, else Debian's /usr/bin/python3, whichever has numpy and matplotlib first.
# Exits 1, printing nothing, when none has them.
cd "$(dirname "$0")/.."
for python in .venv-figures/bin/python python3 /usr/bin/python3; do
  if "$python" -c "import numpy, matplotlib" 2>/dev/null; then
    echo "$python"
    exit 0
  fi
done
exit 1
