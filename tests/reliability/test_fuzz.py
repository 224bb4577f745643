"""Property tests: whatever a user types or a client sends, the config parser and the request
model answer with their own clear error (ConfigError, a 422-bound ValidationError), never
another exception. No Ray, seconds."""

from __future__ import annotations

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raydistill.platform.config import config_from_dict, load_config
from raydistill.platform.errors import ConfigError
from raydistill.serve.gateway import ClassifyRequest

pytestmark = pytest.mark.unit

SECTIONS = ["data", "tokenizer", "teacher", "al", "student", "sweep", "serve", "bench"]
KEYS = ["name", "seed", "lr", "epochs", "num_layers", "seeds", "temperatures", "strategies", "source",
        "max_train", "batch_size", "port", "alpha", "custom_layers", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=12)
trees = st.dictionaries(st.sampled_from(SECTIONS + KEYS), values, max_size=6)
overrides = st.lists(st.text(max_size=40) | st.builds(lambda k, v: f"{k}={v}",
                     st.sampled_from([f"{s}.{k}" for s in SECTIONS for k in KEYS] + KEYS), st.text(max_size=20)),
                     max_size=3)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(trees, overrides)
def test_any_config_tree_and_overrides_load_or_raise_config_error(tree, sets) -> None:
    try:
        cfg = config_from_dict(tree, sets)
    except ConfigError as err:
        assert str(err)
    else:
        assert cfg.name and cfg.student.num_layers >= 1


@FUZZ
@given(st.binary(max_size=300))
def test_any_config_file_loads_or_raises_config_error(tmp_path_factory, content) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(content)
    try:
        load_config(path)
    except ConfigError as err:
        assert str(path) in str(err) or "  " in str(err)


LONE_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)  # JSON can carry them
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=10)
bodies = st.one_of(json_values, st.fixed_dictionaries(
    {"texts": st.lists(st.text(alphabet=st.characters() | LONE_SURROGATES, max_size=30) | json_values, max_size=5)},
    optional={"model": json_values | st.sampled_from(["student", "teacher"]), "extra": json_values}))


@FUZZ
@given(bodies)
def test_any_json_body_validates_or_is_a_422(body) -> None:
    try:
        request = ClassifyRequest.model_validate(body)
    except pydantic.ValidationError as err:
        assert err.errors()  # FastAPI answers these with 422 and the field paths
    else:
        assert request.texts and all(isinstance(t, str) for t in request.texts)
        for text in request.texts:
            text.encode("utf-8")  # what passes can be tokenised: no lone surrogate gets through
