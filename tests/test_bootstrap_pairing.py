"""rFID's bootstrap is paired: a reconstruction and its original carry the same Poisson weight in every replicate.

The two sets an rFID compares are paired by image (reconstruction i of original i), so each bootstrap replicate
must resample them together. Written here without the code under test: a set compared with ITSELF has, in every
paired replicate, two identical weighted statistics, so every replicate's FID is 0 (to the float noise of the matrix
square root); resampled independently (unpaired), the two replicates differ and their FIDs are far from 0.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.metrics


def test_a_set_against_itself_has_zero_fid_in_every_paired_replicate(image_folders, standin_inception):
    from bench.metrics.image_sets import compute_image_metrics
    from titok.data.images import ImageFolder

    a, b = image_folders
    same = compute_image_metrics(ImageFolder(a), ImageFolder(a), inception_weights=standin_inception,
                                 metrics=("fid",), bootstrap=6)
    spread = same.spreads["standin_fid"]
    assert spread["n"] == 6
    assert abs(same.values["standin_fid"]) < 1e-3
    assert spread["mean"] < 1e-3 and spread["std"] < 1e-3, spread
    # The same bootstrap on two different sets is far from 0: the bound above is not met by chance.
    other = compute_image_metrics(ImageFolder(a), ImageFolder(b), inception_weights=standin_inception,
                                  metrics=("fid",), bootstrap=6).spreads["standin_fid"]
    assert other["mean"] > 100 * max(spread["mean"], 1e-5) and other["std"] > 0
