from shortgpt_desktop.core.model.layer_set import LayerGap, first_layer_gap


def test_exactly_the_declared_layers_have_no_gap() -> None:
    assert first_layer_gap(3, {0, 1, 2}) is None


def test_the_first_missing_layer_is_named_before_any_extra_one() -> None:
    assert first_layer_gap(4, {0, 2, 5}) == LayerGap(1, missing=True)


def test_a_layer_beyond_the_declared_count_is_named() -> None:
    assert first_layer_gap(2, {0, 1, 3, 2}) == LayerGap(2, missing=False)


def test_allowed_layers_after_the_last_are_not_extra() -> None:
    assert first_layer_gap(2, {0, 1, 2}, allowed=3) is None
    assert first_layer_gap(2, {0, 1, 2, 3}, allowed=3) == LayerGap(3, missing=False)
