"""The whole network and the prediction path against stored numbers (tests/fixtures/golden).

``tests/fixtures/gen_golden.py`` made the file from weights drawn by parameter name and fixed
inputs; any change of the math (a layer, a mask, the merge, the decoder, postprocess) moves
these numbers by far more than 1e-5. A deliberate change regenerates the file with that script.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from tdfast import Retriever

from fixtures.gen_golden import OUT, TOP_K, VARIANTS, golden_inputs, golden_model, padded

ATOL = 1e-5


@pytest.fixture(scope="module")
def stored():
    with np.load(OUT) as f:
        return dict(f)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forward_matches_the_stored_outputs(stored, variant):
    torch.use_deterministic_algorithms(True)
    model = golden_model(variant)
    videos, queries = golden_inputs(model.config)
    video, vmask, query, qmask = padded(videos, queries)
    with torch.no_grad():
        out = model(video, vmask, query, qmask)
    for key in ("pred_spans", "pred_logits"):
        np.testing.assert_allclose(out[key].numpy(), stored[f"{variant}__{key}"], rtol=0, atol=ATOL, err_msg=key)
    # saliency of real clips only: padded clips are not an output anyone reads
    got, want = out["saliency_scores"].numpy(), stored[f"{variant}__saliency_scores"]
    np.testing.assert_allclose(got[vmask.numpy()], want[vmask.numpy()], rtol=0, atol=ATOL)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_retriever_matches_the_stored_predictions(stored, variant):
    model = golden_model(variant)
    videos, queries = golden_inputs(model.config)
    for i, p in enumerate(Retriever(model).predict(videos, queries, top_k=TOP_K)):
        for name in ("spans", "scores", "saliency"):
            np.testing.assert_allclose(getattr(p, name), stored[f"{variant}__pair{i}_{name}"], rtol=0, atol=ATOL,
                                       err_msg=f"pair {i} {name}")


def test_the_variants_differ_and_no_output_is_degenerate(stored):
    # The fixture itself can fail: the TD layer must change the outputs, and no stored
    # output may be constant (an inert parameter would leave a part of the net untested).
    for key in ("pred_spans", "pred_logits", "saliency_scores"):
        assert np.abs(stored[f"tdem__{key}"] - stored[f"qd__{key}"]).max() > 1e-2, key
        for variant in VARIANTS:
            assert np.isfinite(stored[f"{variant}__{key}"]).all() and stored[f"{variant}__{key}"].std() > 1e-2
    assert Path(OUT).stat().st_size < 64_000
