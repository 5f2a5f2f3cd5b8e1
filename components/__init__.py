"""KFP components of harmguard: one thin module per pipeline step, each calling `harmguard.steps.training`.

Every component runs in the one harmguard image, which already holds harmguard and its locked dependencies, so
nothing is pip-installed at run time (`install_kfp_package=False`). The decorators name the default tag; the tag
actually deployed is a setting (HARMGUARD_IMAGE) that `harmguard compile` / `harmguard submit` stamp into every step
(`harmguard.k8s.cluster.with_image`).
"""

from harmguard.settings import DEFAULT_IMAGE

BASE_IMAGE = DEFAULT_IMAGE
