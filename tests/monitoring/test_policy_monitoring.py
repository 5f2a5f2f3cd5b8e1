"""The policy's `monitoring:` section: defaults, and bounds that make no sense refused with the field named."""

import pytest

from harmguard.policy import MonitoringSpec, PolicyError, load_policy, read_policy_bytes


def test_defaults_and_shipped_policies():
    spec = MonitoringSpec()
    assert (spec.sample_rate, spec.retention_days) == (0.01, 30)
    assert (spec.psi, spec.ks, spec.flag_rate_ratio, spec.length_ks) == (0.2, 0.1, 1.5, 0.1)
    for name in ("sms_spam", "davidson2017", "hate_speech"):
        assert load_policy(name).monitoring == spec


@pytest.mark.parametrize(
    ("field", "value"),
    [("sample_rate", 1.5), ("retention_days", 0), ("flag_rate_ratio", 0.8), ("ks", 2), ("psi", 0), ("unknown", 1)],
)
def test_bad_bounds_are_refused_naming_the_field(tmp_path, field, value):
    text = read_policy_bytes("sms_spam")[0].decode()
    path = tmp_path / "p.yaml"
    path.write_text(text + f"monitoring: {{{field}: {value}}}\n")
    with pytest.raises(PolicyError, match=f"monitoring.{field}"):
        load_policy(str(path))
    path.write_text(text + "monitoring: {sample_rate: 1.0, retention_days: 7}\n")
    assert load_policy(str(path)).monitoring.sample_rate == 1.0
