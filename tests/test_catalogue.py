"""The model catalogue: shipped models, aliases, lifecycle by date, the admin's override file and size rules."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import pricing
from bot.catalogue import Catalogue, SizeRule, parse_size
from bot.config import Settings
from bot.errors import ConfigError, ModelUnavailable

_RULE = Catalogue.load().get("gpt-image-2").size_rule
assert _RULE is not None
RULE: SizeRule = _RULE

GPT_IMAGE_2_FAMILY = [
    "gpt-image-2",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-flare",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
]


def _load(tmp_path: Path, text: str) -> Catalogue:
    path = tmp_path / "catalogue.toml"
    path.write_text(text, encoding="utf-8")
    return Catalogue.load(path)


# -- the shipped catalogue -------------------------------------------------------------------------


def test_shipped_catalogue_loads(catalogue: Catalogue) -> None:
    """models.toml loads into ten models, each with a label and at least one endpoint."""
    assert len(catalogue) == 10
    for spec in catalogue:
        assert all((spec.label, spec.endpoints, spec.qualities, spec.sizes)), spec.name


@pytest.mark.parametrize(
    "name",
    [
        *GPT_IMAGE_2_FAMILY,
        "gpt-image-1.5",
        "gpt-image-1-mini",
        "gpt-image-1",
        "dall-e-3",
        "dall-e-2",
    ],
)
def test_named_models_exist(catalogue: Catalogue, name: str) -> None:
    """Every model the bot is meant to know is in the catalogue under its own name."""
    assert name in catalogue
    assert catalogue.get(name).name == name


def test_default_model_is_gpt_image_2(catalogue: Catalogue) -> None:
    """The settings' default model is gpt-image-2, which generates and edits with free-form sizes."""
    default = Settings.model_fields["model"].default
    assert default == "gpt-image-2"
    spec = catalogue.get(default)
    assert spec.status(dt.date(2026, 11, 24)) == "active"
    assert spec.endpoints == {"generate", "edit"}
    assert (spec.default_size, spec.default_quality) == ("auto", "auto")
    assert spec.qualities == ("auto", "low", "medium", "high")
    assert spec.size_rule == SizeRule(
        multiple_of=16, max_aspect=3.0, max_edge=3840, min_pixels=655_360, max_pixels=8_294_400
    )


@pytest.mark.parametrize("name", GPT_IMAGE_2_FAMILY[1:])
def test_sunburst_and_flare_add_qualities(catalogue: Catalogue, name: str) -> None:
    """2.5 and 2.6 inherit gpt-image-2's rules and add xhigh and max."""
    spec = catalogue.get(name)
    assert spec.qualities == ("auto", "low", "medium", "high", "xhigh", "max")
    assert spec.size_rule == catalogue.get("gpt-image-2").size_rule
    base = catalogue.get("gpt-image-2").prices
    assert (spec.prices.unit, spec.prices.image_out, spec.prices.per_image) == ("tokens", 30.0, base.per_image)
    assert {"xhigh", "max"} <= set(spec.prices.output_tokens)


def test_complexity_only_on_2_6(catalogue: Catalogue) -> None:
    """Only the 2.6 models take complexity (default high) and offer SVG and GIF output."""
    with_complexity = sorted(spec.name for spec in catalogue if spec.complexity)
    assert with_complexity == ["gpt-image-2.6-flare", "gpt-image-2.6-sunburst"]
    for name in with_complexity:
        spec = catalogue.get(name)
        assert spec.complexity == ("low", "medium", "high")
        assert spec.default_complexity == "high"
        assert {"svg", "gif"} <= set(spec.output_formats)
    assert "svg" not in catalogue.get("gpt-image-2.5-sunburst").output_formats


@pytest.mark.parametrize("name", ["gpt-image-1.5", "gpt-image-1-mini"])
def test_gpt_image_1_5_and_mini_shut_down_in_december(catalogue: Catalogue, name: str) -> None:
    """gpt-image-1.5 and -1-mini shut down on 2026-12-01, replaced by gpt-image-2."""
    spec = catalogue.get(name)
    assert spec.deprecated == dt.date(2026, 6, 2)
    assert spec.shutdown == dt.date(2026, 12, 1)
    assert spec.replacement == "gpt-image-2"


@pytest.mark.parametrize("name", ["dall-e-3", "dall-e-2"])
def test_dall_e_shut_down_in_may(catalogue: Catalogue, name: str) -> None:
    """Both DALL·E models shut down on 2026-05-12, replaced by gpt-image-2."""
    spec = catalogue.get(name)
    assert spec.shutdown == dt.date(2026, 5, 12)
    assert spec.replacement == "gpt-image-2"
    assert spec.status(dt.date(2026, 5, 12)) == "shutdown"


def test_gpt_image_1_has_no_shutdown(catalogue: Catalogue) -> None:
    """gpt-image-1 clears the dates it would inherit from gpt-image-1.5."""
    spec = catalogue.get("gpt-image-1")
    assert (spec.deprecated, spec.shutdown, spec.replacement) == (None, None, None)
    assert spec.status(dt.date(2030, 1, 1)) == "active"


def test_mini_has_no_input_fidelity(catalogue: Catalogue) -> None:
    """gpt-image-1-mini lacks input_fidelity; gpt-image-1.5 and gpt-image-2 have it."""
    assert catalogue.get("gpt-image-1-mini").input_fidelity == ()
    assert catalogue.get("gpt-image-1.5").input_fidelity == ("low", "high")
    assert catalogue.get("gpt-image-2").input_fidelity == ("low", "high")


def test_dall_e_2_edit_limits(catalogue: Catalogue) -> None:
    """dall-e-2 edits one square PNG under 4 MB and is the only model with the variations endpoint."""
    spec = catalogue.get("dall-e-2")
    assert spec.edit is not None
    assert (spec.edit.max_images, spec.edit.formats, spec.edit.square_only) == (1, ("png",), True)
    assert spec.edit.max_bytes == 4 * 1024 * 1024
    assert [s.name for s in catalogue if s.supports("variations")] == ["dall-e-2"]
    assert not catalogue.get("dall-e-3").can_vary()


def test_every_shipped_model_is_consistent(catalogue: Catalogue) -> None:
    """Each model's listed sizes are allowed, and every quality has a price (table row or output tokens)."""
    for spec in catalogue:
        assert spec.default_quality in spec.qualities
        assert all(spec.size_allowed(size) for size in spec.sizes), spec.name
        for quality in spec.qualities:
            if quality == "auto":
                continue
            priced = quality in spec.prices.per_image or quality in spec.prices.output_tokens
            assert priced, f"{spec.name} has no price for {quality}"
        if spec.replacement:
            assert spec.replacement in catalogue


# -- names and aliases -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("gpt-image-2-2026-04-21", "gpt-image-2"),
        ("GPT-Image-2-2026-04-21", "gpt-image-2"),
        ("  gpt-image-2  ", "gpt-image-2"),
        ("gpt-image-1.5-2025-12-16", "gpt-image-1.5"),
        ("gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5-sunburst"),
        ("gpt-image-2.5-flare-2026-09-08", "gpt-image-2.5-flare"),
    ],
)
def test_aliases_resolve(catalogue: Catalogue, alias: str, name: str) -> None:
    """Snapshot names and odd spelling find the model."""
    assert catalogue.get(alias).name == name
    assert alias in catalogue


def test_children_do_not_inherit_aliases(catalogue: Catalogue) -> None:
    """2.6 clears the alias list it would inherit, so no two models share an alias."""
    assert catalogue.get("gpt-image-2.6-sunburst").aliases == ()
    aliases = [alias for spec in catalogue for alias in spec.aliases]
    assert len(aliases) == len(set(aliases))


def test_unknown_model(catalogue: Catalogue) -> None:
    """An unknown name is ModelUnavailable naming the choices; find() gives None."""
    assert catalogue.find("gpt-image-9") is None
    assert "gpt-image-9" not in catalogue
    assert 42 not in catalogue
    with pytest.raises(ModelUnavailable) as caught:
        catalogue.get("gpt-image-9")
    assert caught.value.model == "gpt-image-9"
    assert caught.value.message.startswith("There is no model called 'gpt-image-9'; choose one of: gpt-image-2, ")
    assert caught.value.message.endswith(".")


# -- lifecycle -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "day", "status"),
    [
        ("gpt-image-1.5", dt.date(2026, 3, 1), "active"),
        ("gpt-image-1.5", dt.date(2026, 6, 2), "deprecated"),
        ("gpt-image-1.5", dt.date(2026, 11, 24), "deprecated"),
        ("gpt-image-1.5", dt.date(2026, 11, 30), "deprecated"),
        ("gpt-image-1.5", dt.date(2026, 12, 1), "shutdown"),
        ("gpt-image-1-mini", dt.date(2026, 12, 1), "shutdown"),
        ("dall-e-3", dt.date(2026, 5, 11), "deprecated"),
        ("dall-e-3", dt.date(2026, 5, 12), "shutdown"),
        ("dall-e-2", dt.date(2027, 1, 1), "shutdown"),
        ("gpt-image-2", dt.date(2026, 11, 24), "active"),
        ("gpt-image-2.6-flare", dt.date(2026, 12, 1), "active"),
    ],
)
def test_status_by_date(catalogue: Catalogue, name: str, day: dt.date, status: str) -> None:
    """Status starts on its date; a model is active before its deprecation date."""
    assert catalogue.get(name).status(day) == status


def test_active_hides_shut_down_models_newest_first(catalogue: Catalogue) -> None:
    """On 2026-12-01 the DALL·E models, 1.5 and mini are gone; the 2.6 models lead."""
    names = [spec.name for spec in catalogue.active(dt.date(2026, 12, 1))]
    assert names[:2] == ["gpt-image-2.6-sunburst", "gpt-image-2.6-flare"]
    assert set(names) == {*GPT_IMAGE_2_FAMILY, "gpt-image-1"}
    assert names[-1] == "gpt-image-1"


# -- the admin's override file ---------------------------------------------------------------------


def test_override_adds_model_through_extends(tmp_path: Path, catalogue: Catalogue) -> None:
    """A new model that extends gpt-image-2 gets all its rules and changes only what it lists."""
    loaded = _load(
        tmp_path,
        '[models."house-image"]\nextends = "gpt-image-2"\nlabel = "House"\naliases = ["house"]\nn_max = 4\n',
    )
    assert len(loaded) == len(catalogue) + 1
    spec = loaded.get("house")
    assert (spec.name, spec.label, spec.n_max) == ("house-image", "House", 4)
    base = catalogue.get("gpt-image-2")
    assert (spec.size_rule, spec.qualities, spec.prices, spec.edit) == (
        base.size_rule,
        base.qualities,
        base.prices,
        base.edit,
    )
    assert loaded.get("gpt-image-2") == base


def test_override_changes_one_field_and_keeps_the_rest(tmp_path: Path, catalogue: Catalogue) -> None:
    """Overriding n_max of gpt-image-2 keeps its aliases, sizes, rule and prices; its children see the change."""
    loaded = _load(tmp_path, '[models."gpt-image-2"]\nn_max = 2\nshutdown = 2027-06-01\n')
    spec = loaded.get("gpt-image-2-2026-04-21")
    base = catalogue.get("gpt-image-2")
    assert spec.n_max == 2
    assert spec.shutdown == dt.date(2027, 6, 1)
    assert spec.status(dt.date(2027, 6, 1)) == "shutdown"
    for field in dataclasses.fields(spec):
        if field.name not in {"n_max", "shutdown"}:
            assert getattr(spec, field.name) == getattr(base, field.name), field.name
    assert loaded.get("gpt-image-2.5-sunburst").n_max == 2
    assert loaded.get("gpt-image-1").n_max == 10


def test_override_with_extends_replaces_shipped_model(tmp_path: Path) -> None:
    """A shipped name given with `extends` is redefined from its parent, not merged with the old entry."""
    loaded = _load(tmp_path, '[models."gpt-image-1"]\nextends = "gpt-image-2"\nlabel = "Old name, new rules"\n')
    spec = loaded.get("gpt-image-1")
    assert spec.label == "Old name, new rules"
    assert spec.size_rule is not None
    assert spec.prices == loaded.get("gpt-image-2").prices


def test_an_entry_with_its_own_prices_is_priced_by_them(tmp_path: Path, catalogue: Catalogue) -> None:
    """A model extending gpt-image-2 with its own token prices (or gpt-image-2 overridden so) is estimated from
    those prices, not from gpt-image-2's per-image table, which would take precedence and underprice it."""
    loaded = _load(
        tmp_path,
        '[models."gpt-image-3"]\nextends = "gpt-image-2"\n'
        'prices = { unit = "tokens", text_in = 5.0, image_in = 8.0, image_out = 40.0 }\n',
    )

    def high(model: Catalogue, name: str) -> int:
        return pricing.estimate(model.get(name), size="1024x1024", quality="high", n=1, prompt="a fox")

    assert high(loaded, "gpt-image-3") > high(catalogue, "gpt-image-2")
    assert loaded.get("gpt-image-3").prices.per_image == {}
    overridden = _load(
        tmp_path,
        '[models."gpt-image-2"]\nprices = { unit = "tokens", text_in = 5.0, image_in = 8.0, image_out = 60.0 }\n',
    )
    assert high(overridden, "gpt-image-2") > high(catalogue, "gpt-image-2")
    assert high(_load(tmp_path, '[models."gpt-image-2"]\nn_max = 4\n'), "gpt-image-2") == high(catalogue, "gpt-image-2")


def test_empty_override_is_the_shipped_catalogue(tmp_path: Path, catalogue: Catalogue) -> None:
    """An empty file changes nothing."""
    loaded = _load(tmp_path, "# nothing yet\n")
    assert list(loaded) == list(catalogue)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[models."gpt-image-2"]\ncolour = "red"\n', "model 'gpt-image-2' has unknown field(s) colour"),
        ('[models."new"]\nextends = "gpt-image-9"\n', "model 'new' extends unknown model 'gpt-image-9'"),
        (
            '[models."a"]\nextends = "b"\n[models."b"]\nextends = "a"\n',
            "model 'a' extends itself (a -> b -> a)",
        ),
        ('[models."a"]\nextends = "a"\n', "model 'a' extends itself (a -> a)"),
        ('[models."a"]\nextends = ["gpt-image-2"]\n', "extends must be a model name"),
        (
            '[models."gpt-image-1"]\ndefault_size = "2048x2048"\n',
            "default_size '2048x2048' is not among its sizes",
        ),
        ('[models."gpt-image-2"]\ndefault_size = "1000x1000"\n', "default_size '1000x1000' is not among its sizes"),
        ('[models."gpt-image-2"]\ndefault_quality = "ultra"\n', "default_quality 'ultra' is not among its qualities"),
        ('[models."new"]\nlabel = "New"\nfamily = "x"\n', "model 'new' is missing endpoints, sizes"),
        ('[models."gpt-image-2"]\nendpoints = ["paint"]\n', "only generate, edit and variations exist"),
        ('[models."gpt-image-2"]\nsizes = "1024x1024"\n', "sizes: expected a list of strings"),
        ('[models."gpt-image-2"]\nshutdown = "soon"\n', "expected a date like 2026-12-01, got 'soon'"),
        ('[models."gpt-image-2"]\nn_max = "many"\n', "model 'gpt-image-2' is malformed"),
        ('[models."gpt-image-2"]\nsize_rule = { multiple_of = 0 }\n', "multiple_of must be at least 1"),
        ('[models."gpt-image-2"]\nsize_rule = { step = 16 }\n', "model 'gpt-image-2' is malformed"),
        ('[models."gpt-image-2"]\nprices = { unit = "euro" }\n', 'prices.unit: expected "image" or "tokens"'),
        ('[models."gpt-image-2"]\nprices = { unit = "tokens", text_in = "5" }\n', "prices.text_in: expected dollars"),
        ('[models."dall-e-2"]\nper_image = { standard = { "256x256" = "cheap" } }\n', "per_image: expected"),
        ('[models."gpt-image-2"]\noutput_tokens = { low = 1.5 }\n', "output_tokens: expected"),
        ('[models."dall-e-3"]\nendpoints = ["generate", "edit"]\n', "lists the edit endpoint but has no [edit] limits"),
        ('[models."dall-e-3"]\nreplacement = "gpt-image-9"\n', "names unknown replacement 'gpt-image-9'"),
        ('[model."gpt-image-2"]\nn_max = 2\n', "unknown top-level key(s) model"),
        ("models = 3\n", 'models must be tables like [models."name"]'),
        ('[models]\n"gpt-image-2" = 3\n', '[models."gpt-image-2"] must be a table'),
        ("[models\nthis is not toml", "is not valid TOML"),
        ('[models."gpt-image-2"]\nedit = true\n', "edit: expected a table"),
        ('[models."gpt-image-2"]\nedit = "big"\n', "edit: expected a table"),
        ('[models."gpt-image-2"]\nstreaming = "false"\n', "streaming: expected true or false, got 'false'"),
        ('[models."gpt-image-2"]\nedit = { mask = "no" }\n', "edit.mask: expected true or false"),
    ],
)
def test_bad_override_is_config_error(tmp_path: Path, text: str, expected: str) -> None:
    """A broken admin file fails at load with a ConfigError that says what and where."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert expected in caught.value.message
    assert str(tmp_path / "catalogue.toml") in caught.value.message


def test_missing_override_file(tmp_path: Path) -> None:
    """A file that is not there names the file and the variable to fix."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        Catalogue.load(missing)
    assert caught.value.message == f"EASEL_CATALOGUE_FILE: cannot read {missing} (No such file or directory)"
    assert caught.value.variable == "EASEL_CATALOGUE_FILE"


def test_not_toml_names_the_variable(tmp_path: Path) -> None:
    """Invalid TOML points the admin at EASEL_CATALOGUE_FILE."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "models = [")
    assert caught.value.variable == "EASEL_CATALOGUE_FILE"
    assert caught.value.message.startswith("EASEL_CATALOGUE_FILE: ")


# -- sizes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1024x1536", (1024, 1536)),
        (" 1024X1536 ", (1024, 1536)),
        ("auto", None),
        ("1024x", None),
        ("1024*1024", None),
        ("123456x1", None),
        ("", None),
    ],
)
def test_parse_size(text: str, parsed: tuple[int, int] | None) -> None:
    """WxH parses; anything else, "auto" included, is None."""
    assert parse_size(text) == parsed


@pytest.mark.parametrize(
    ("width", "height", "problems"),
    [
        (1024, 1024, []),
        (3840, 2160, []),
        (2160, 3840, []),
        (3840, 1280, []),
        (816, 816, []),
        (1000, 1000, ["both sides must be multiples of 16"]),
        (1024, 1020, ["both sides must be multiples of 16"]),
        (3856, 1296, ["the longer side may be at most 3840"]),
        (2400, 784, ["the aspect ratio must be between 1:3 and 3:1"]),
        (784, 2400, ["the aspect ratio must be between 1:3 and 3:1"]),
        (3840, 2176, ["at most 8,294,400 pixels in all"]),
        (800, 800, ["at least 655,360 pixels in all"]),
        (
            4000,
            1000,
            [
                "both sides must be multiples of 16",
                "the longer side may be at most 3840",
                "the aspect ratio must be between 1:3 and 3:1",
            ],
        ),
        (0, 1024, ["the aspect ratio must be between 1:3 and 3:1", "at least 655,360 pixels in all"]),
    ],
)
def test_gpt_image_2_size_rule_problems(width: int, height: int, problems: list[str]) -> None:
    """Each broken limit of gpt-image-2's rule is named once, in a fixed order."""
    assert RULE.problems(width, height) == problems


def test_size_allowed(catalogue: Catalogue) -> None:
    """Named sizes and rule-abiding WxH pass; others do not."""
    gpt = catalogue.get("gpt-image-2")
    assert gpt.size_allowed("auto")
    assert gpt.size_allowed("2048x1152")
    assert gpt.size_allowed("1008x1008")
    assert not gpt.size_allowed("1000x1000")
    assert not gpt.size_allowed("large")
    dalle = catalogue.get("dall-e-2")
    assert dalle.size_allowed("256x256")
    assert not dalle.size_allowed("auto")
    assert not dalle.size_allowed("2048x2048")


@pytest.mark.parametrize(
    ("width", "height", "nearest"),
    [
        (1536, 1024, (1536, 1024)),
        (1020, 1020, (1024, 1024)),
        (1030, 1030, (1024, 1024)),
        (10000, 1, (3840, 1280)),
        (1, 10000, (1280, 3840)),
        (10000, 10000, (2880, 2880)),
        (4000, 2250, (3840, 2160)),
        (100, 100, (816, 816)),
        (0, 0, (816, 816)),
    ],
)
def test_nearest_examples(width: int, height: int, nearest: tuple[int, int]) -> None:
    """nearest() rounds to the closest multiple and fits the shape into the limits."""
    assert RULE.nearest(width, height) == nearest


def test_nearest_of_1000_is_one_step_away() -> None:
    """1000x1000 becomes a square one multiple of 16 away."""
    width, height = RULE.nearest(1000, 1000)
    assert width == height
    assert abs(width - 1000) <= 8


def test_size_rule_refuses_impossible_limits() -> None:
    """A rule that no size could satisfy is refused when built."""
    with pytest.raises(ValueError, match="multiple_of"):
        SizeRule(multiple_of=0)
    with pytest.raises(ValueError, match="max_aspect"):
        SizeRule(max_aspect=0.5)
    with pytest.raises(ValueError, match="min_pixels"):
        SizeRule(min_pixels=10, max_pixels=5)
    with pytest.raises(ValueError, match="max_edge"):
        SizeRule(multiple_of=64, max_edge=32)


_SIDE = st.integers(min_value=1, max_value=10_000)


@given(width=_SIDE, height=_SIDE)
def test_nearest_is_always_allowed_and_keeps_orientation(width: int, height: int) -> None:
    """For any WxH in 1..10000, nearest() is allowed, keeps landscape/portrait, and keeps the (clamped) shape."""
    near_w, near_h = RULE.nearest(width, height)
    assert RULE.problems(near_w, near_h) == []
    if width > height:
        assert near_w >= near_h
    elif width < height:
        assert near_w <= near_h
    wanted = min(max(width / height, 1 / RULE.max_aspect), RULE.max_aspect)
    assert abs((near_w / near_h) / wanted - 1) < 0.1


@given(width=st.integers(min_value=1, max_value=240), height=st.integers(min_value=1, max_value=240))
def test_nearest_keeps_allowed_sizes(width: int, height: int) -> None:
    """A size the rule already allows comes back unchanged."""
    size = (width * 16, height * 16)
    if not RULE.problems(*size):
        assert RULE.nearest(*size) == size


@st.composite
def _rules(draw: st.DrawFn) -> SizeRule:
    """Random rules that admit at least one square size."""
    multiple = draw(st.sampled_from([1, 2, 8, 16, 32, 64]))
    square = multiple * draw(st.integers(min_value=1, max_value=64))
    max_edge = square + multiple * draw(st.integers(min_value=0, max_value=64))
    return SizeRule(
        multiple_of=multiple,
        max_aspect=draw(st.floats(min_value=1.0, max_value=4.0)),
        max_edge=max_edge,
        min_pixels=draw(st.integers(min_value=0, max_value=square * square)),
        max_pixels=draw(st.integers(min_value=square * square, max_value=max_edge * max_edge)),
    )


@given(rule=_rules(), width=_SIDE, height=_SIDE)
def test_nearest_is_allowed_under_any_satisfiable_rule(rule: SizeRule, width: int, height: int) -> None:
    """Whatever the limits, nearest() returns a size that rule allows, in the same orientation."""
    near_w, near_h = rule.nearest(width, height)
    assert rule.problems(near_w, near_h) == []
    if width > height:
        assert near_w >= near_h
    elif width < height:
        assert near_w <= near_h


def test_admin_model_does_not_take_its_parents_aliases(tmp_path: Path) -> None:
    """A model that extends gpt-image-2 gets no gpt-image-2 aliases; the alias still names gpt-image-2."""
    loaded = _load(tmp_path, '[models."house"]\nextends = "gpt-image-2"\n')
    assert loaded.get("house").aliases == ()
    assert loaded.get("gpt-image-2-2026-04-21").name == "gpt-image-2"
