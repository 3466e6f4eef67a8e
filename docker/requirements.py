"""Print the project's requirements for some extras, one a line, from pyproject.toml alone.

The image build installs these before it copies the sources, so a code change rebuilds only the
project's own layer. EXTRAS is one extra or several joined by commas (``cpu,serve``); an extra
that names the project's own extras (``digits[serve]``) is expanded.
Usage: python3 docker/requirements.py EXTRAS [PYPROJECT]
"""

import re
import sys
import tomllib

with open(sys.argv[2] if len(sys.argv) > 2 else "pyproject.toml", "rb") as file:
    project = tomllib.load(file)["project"]
own = re.compile(rf"{re.escape(project['name'])}\[([^\]]+)\]")


def requirements(extras: list[str]) -> list[str]:
    found = []
    for extra in extras:
        for requirement in project["optional-dependencies"][extra]:
            match = own.fullmatch(requirement.replace(" ", ""))
            found += requirements(match.group(1).split(",")) if match else [requirement]
    return found


listed = [*project["dependencies"], *requirements(sys.argv[1].split(","))]
print(*dict.fromkeys(listed), sep="\n")
