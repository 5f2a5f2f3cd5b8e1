"""KFP components of harmguard: one thin module per pipeline step, each calling `harmguard.steps`.

Every component runs in the one harmguard image (`harmguard.lineage.DEFAULT_IMAGE`), which already holds
harmguard and its locked dependencies, so nothing is pip-installed at run time (`install_kfp_package=False`).
"""

from harmguard.lineage import DEFAULT_IMAGE

BASE_IMAGE = DEFAULT_IMAGE
