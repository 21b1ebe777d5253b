"""Entry-point discovery: real plugin distributions, lazy loading, and the one-line errors."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from gn_plugin import GnPluginError, create, get, list_components, register
from gn_plugin.registry import registry

DEMO_PLUGIN = """
    import torch
    from torch import nn

    LOADED = True

    class Doubled(nn.Module):
        def __init__(self, discriminator, factor=2.0):
            super().__init__()
            self.discriminator, self.factor = discriminator, factor

        def forward(self, x, y=None):
            return self.factor * self.discriminator(x).reshape(len(x))

    def doubled(discriminator, factor=2.0):
        return Doubled(discriminator, factor)

    class AbsoluteLoss:
        def d_loss(self, real, fake):
            return (real - fake).abs().mean()

        def g_loss(self, fake):
            return -fake.abs().mean()
"""


def test_builtins_are_found_through_the_projects_own_entry_points():
    for kind, names in {
        "norm": {"none", "sn", "gn", "gn-cr"},
        "loss": {"hinge", "ns", "wasserstein", "ls"},
        "regularizer": {"gp", "cr", "r1"},
    }.items():
        assert names <= set(list_components(kind))
        for name in names:
            assert registry(kind).info(name).provider == "gn-plugin"


def test_third_party_plugin_is_discovered_lazily_and_used(make_distribution):
    make_distribution(
        "gnp-demo",
        {"gnp_demo": DEMO_PLUGIN},
        {"gn_plugin.norms": {"doubled": "gnp_demo:doubled"}, "gn_plugin.losses": {"absolute": "gnp_demo:AbsoluteLoss"}},
    )
    assert "doubled" in list_components("norm") and "absolute" in list_components("loss")
    assert "gnp_demo" not in sys.modules, "listing must not import the plugin"
    info = registry("norm").info("doubled")
    assert (info.provider, info.target) == ("gnp-demo", "gnp_demo:doubled")

    d = nn.Linear(4, 1)
    wrapper = create("norm", "doubled", d, factor=3.0)
    assert "gnp_demo" in sys.modules
    x = torch.randn(5, 4)
    torch.testing.assert_close(wrapper(x), 3 * d(x).squeeze(1))
    loss = create("loss", "absolute")
    assert loss.d_loss(torch.ones(3), torch.zeros(3)).item() == 1.0
    sys.modules.pop("gnp_demo", None)


def test_broken_plugin_is_reported_by_name_and_others_keep_working(make_distribution):
    make_distribution(
        "gnp-broken",
        {"gnp_broken": "raise ImportError('missing dependency frobnicate')\n"},
        {"gn_plugin.norms": {"broken": "gnp_broken:factory"}},
    )
    with pytest.raises(GnPluginError) as error:
        get("norm", "broken")
    message = str(error.value)
    assert "\n" not in message
    for part in ("broken", "gnp-broken", "gnp_broken:factory", "ImportError", "frobnicate"):
        assert part in message
    assert isinstance(create("norm", "gn", nn.Linear(4, 1)), nn.Module)  # others still load
    assert "broken" in list_components("norm")


def test_two_distributions_claiming_one_name_are_both_named(make_distribution):
    source = "def factory(discriminator):\n    return discriminator\n"
    make_distribution("gnp-alpha", {"gnp_alpha": source}, {"gn_plugin.norms": {"twin": "gnp_alpha:factory"}})
    make_distribution("gnp-beta", {"gnp_beta": source}, {"gn_plugin.norms": {"twin": "gnp_beta:factory"}})
    with pytest.raises(GnPluginError, match=r"norm 'twin' is claimed by 2 distributions: .*gnp-(alpha|beta).*gnp-(alpha|beta)"):
        get("norm", "twin")
    assert isinstance(create("norm", "sn", nn.Linear(4, 1)), nn.Module)


def test_unknown_name_lists_available_and_suggests_closest():
    with pytest.raises(GnPluginError) as error:
        get("norm", "gm")
    message = str(error.value)
    assert message.startswith("unknown norm 'gm'; did you mean 'gn'?")
    assert "gn-cr" in message and "sn" in message and "\n" not in message
    with pytest.raises(GnPluginError, match="unknown component kind 'norms'"):
        list_components("norms")


def test_bad_option_is_a_one_line_error_naming_the_component():
    with pytest.raises(GnPluginError, match=r"regularizer 'gp': unknown option 'wieght'; did you mean 'weight'\?"):
        create("regularizer", "gp", wieght=3)
    # the suggestion and the list are the options a config can set, not the arguments the runner passes
    with pytest.raises(GnPluginError) as error:
        create("norm", "gn-cr", nn.Linear(2, 1), consistncy_weight=3)
    assert str(error.value) == (
        "norm 'gn-cr': unknown option 'consistncy_weight'; did you mean 'consistency_weight'? "
        "(its options: consistency_weight, max_translation, zeta, hflip)"
    )
    with pytest.raises(GnPluginError, match="unknown option 'colour' \\(its options: "):
        create("model", "mlp", z_dim=2, num_classes=0, width=1.0, channels=1, colour=2)


def test_in_process_registration_decorator_and_duplicates():
    @register("loss", "zero-test")
    class ZeroLoss:
        def d_loss(self, real, fake):
            return real.sum() * 0

        def g_loss(self, fake):
            return fake.sum() * 0

    try:
        assert "zero-test" in list_components("loss")
        assert registry("loss").info("zero-test").provider.startswith("in-process")
        assert create("loss", "zero-test").g_loss(torch.ones(2)).item() == 0
        with pytest.raises(GnPluginError, match="already registered"):
            register("loss", "hinge")(ZeroLoss)
        with pytest.raises(GnPluginError, match="already registered"):
            register("loss", "zero-test")(ZeroLoss)
    finally:
        registry("loss").unregister("zero-test")
    assert "zero-test" not in list_components("loss")
