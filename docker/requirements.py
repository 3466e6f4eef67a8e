"""Print the project's requirements for one extra, one a line, from pyproject.toml alone.

The image build installs these before it copies the sources, so a code change rebuilds only the
project's own layer. Usage: python3 docker/requirements.py EXTRA [PYPROJECT]
"""

import sys
import tomllib

extra = sys.argv[1]
with open(sys.argv[2] if len(sys.argv) > 2 else "pyproject.toml", "rb") as file:
    project = tomllib.load(file)["project"]
print(*project["dependencies"], *project["optional-dependencies"][extra], sep="\n")
