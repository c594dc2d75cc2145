"""The drift statistics against scipy on known distributions, and the sketches' accuracy and merging."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from scipy.spatial import distance

from modelyard.monitoring import stats
from modelyard.monitoring.drift import choose_method, column_drift, data_drift, data_quality
from modelyard.monitoring.profile import Profile, dumps, loads, profile_frame, profile_records
from modelyard.monitoring.sketch import CategoryCounts, QuantileSketch

RNG = np.random.default_rng(7)


def exact(x):
    return QuantileSketch.from_values(x, max_exact=10**9)


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_wasserstein_on_exact_samples_equals_scipy(shift):
    a, b = RNG.normal(size=3000), RNG.normal(loc=shift, scale=1.2, size=2000)
    assert stats.wasserstein(exact(a), exact(b)) == pytest.approx(st.wasserstein_distance(a, b), rel=1e-9)


def test_normal_samples_a_shift_apart_are_that_far_in_wasserstein():
    a, b = RNG.normal(size=200_000), RNG.normal(loc=0.5, size=200_000)
    assert stats.wasserstein(exact(a), exact(b)) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("n,m", [(50, 80), (400, 300), (5000, 4000)])
def test_ks_statistic_and_p_value_equal_scipy(n, m):
    a, b = RNG.normal(size=n), RNG.normal(loc=0.2, size=m)
    d, p = stats.ks_test(exact(a), exact(b))
    ref = st.ks_2samp(a, b)
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_ks_from_sketches_of_large_samples_matches_scipy_asymptotic():
    a, b = RNG.normal(size=100_000), RNG.normal(loc=0.02, size=80_000)
    d, p = stats.ks_test(QuantileSketch.from_values(a, size=2048), QuantileSketch.from_values(b, size=2048))
    ref = st.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=2e-3)
    # the p-value from a statistic that close is within a factor of a few in this range
    assert abs(np.log10(p) - np.log10(ref.pvalue)) < 1.0


def test_chi_square_equals_scipy_on_category_counts():
    ref = {"a": 500, "b": 300, "c": 200}
    cur = {"a": 40, "b": 35, "c": 25}
    stat, p = stats.chi_square_test(ref, cur)
    f_obs = [40, 35, 25]
    f_exp = [500 * 0.1, 300 * 0.1, 200 * 0.1]
    ref_stat, ref_p = st.chisquare(f_obs, f_exp)
    assert stat == pytest.approx(ref_stat) and p == pytest.approx(ref_p)


def test_chi_square_of_a_category_the_reference_never_saw_is_certain_drift():
    assert stats.chi_square_test({"a": 10, "b": 10}, {"a": 5, "b": 5, "z": 1})[1] == 0.0


def test_z_test_equals_the_two_proportion_formula():
    z, p = stats.z_test({"no": 700, "yes": 300}, {"no": 550, "yes": 450})
    p1, p2, n1, n2 = 0.3, 0.45, 1000, 1000
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    expected = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert z == pytest.approx(expected) and p == pytest.approx(2 * st.norm.sf(abs(expected)))


def test_jensen_shannon_equals_scipy_and_psi_follows_its_formula():
    p, q = np.array([0.2, 0.5, 0.3]), np.array([0.1, 0.6, 0.3])
    assert stats.jensen_shannon(p, q) == pytest.approx(distance.jensenshannon(p, q))
    assert stats.psi(p, q) == pytest.approx(np.sum((p - q) * np.log(p / q)))


def test_binned_shares_equal_numpy_histogram_with_sturges_bins():
    a, b = RNG.normal(size=700), RNG.normal(loc=0.5, size=300)
    edges = np.histogram_bin_edges(np.concatenate([a, b]), bins="sturges")
    p, q = stats.binned_shares(exact(a), exact(b), min(a.min(), b.min()), max(a.max(), b.max()))
    assert np.allclose(p, np.histogram(a, edges)[0] / len(a))
    assert np.allclose(q, np.histogram(b, edges)[0] / len(b))


def test_sketch_merge_keeps_quantiles_within_a_fraction_of_a_percent_in_rank():
    x = RNG.lognormal(size=300_000)
    parts = [QuantileSketch.from_values(c) for c in np.array_split(x, 60)]
    merged = QuantileSketch.merge(parts, size=1024)
    assert merged.count == len(x)
    probe = np.quantile(x, np.linspace(0.01, 0.99, 50))
    true_cdf = np.searchsorted(np.sort(x), probe, side="right") / len(x)
    assert np.max(np.abs(merged.cdf(probe) - true_cdf)) < 0.005


def test_small_sketches_stay_exact_when_merged():
    parts = [QuantileSketch.from_values(RNG.normal(size=100)) for _ in range(5)]
    merged = QuantileSketch.merge(parts)
    assert merged.exact and merged.count == 500


def test_category_counts_keep_the_most_frequent_and_sum_the_rest():
    merged = CategoryCounts.merge([CategoryCounts.from_counts({"a": 5, "b": 1}, cap=2),
                                   CategoryCounts.from_counts({"c": 3, "a": 1}, cap=2)], cap=2)
    assert merged.counts == {"a": 6, "c": 3} and merged.other == 1 and merged.total == 10


def test_evidently_selection_p_values_for_small_references_and_distances_for_large():
    small = profile_frame(pd.DataFrame({"x": RNG.normal(size=800), "c": RNG.choice(list("abc"), 800),
                                        "b": RNG.choice(["y", "n"], 800), "d": RNG.integers(0, 4, 800)}))
    large = profile_frame(pd.DataFrame({"x": RNG.normal(size=5000), "c": RNG.choice(list("abc"), 5000),
                                        "d": RNG.integers(0, 4, 5000)}))
    assert choose_method(small.columns["x"], small.columns["x"]) == "ks"
    assert choose_method(small.columns["c"], small.columns["c"]) == "chisquare"
    assert choose_method(small.columns["b"], small.columns["b"]) == "z"
    assert choose_method(small.columns["d"], small.columns["d"]) == "chisquare"
    assert choose_method(large.columns["x"], large.columns["x"]) == "wasserstein"
    assert choose_method(large.columns["c"], large.columns["c"]) == "jensenshannon"
    assert choose_method(large.columns["d"], large.columns["d"]) == "jensenshannon"


def test_a_million_rows_of_unchanged_data_flag_no_column_while_ks_p_values_would():
    n = 1_000_000
    ref = pd.DataFrame({f"x{i}": RNG.normal(size=n) for i in range(5)})
    cur = pd.DataFrame({f"x{i}": RNG.normal(size=n) + (0.005 if i == 0 else 0) for i in range(5)})
    result = data_drift(profile_frame(ref), profile_frame(cur))
    assert result["drifted_columns"] == []
    # the same negligible shift is "significant" to a p-value test at this size (Evidently issue 50)
    assert st.ks_2samp(ref["x0"], cur["x0"]).pvalue < 0.05


def test_user_chosen_method_and_threshold_apply_per_column():
    ref = profile_frame(pd.DataFrame({"x": RNG.normal(size=5000)}))
    cur = profile_frame(pd.DataFrame({"x": RNG.normal(loc=0.05, size=5000)}))
    assert not column_drift("x", ref.columns["x"], cur.columns["x"]).drifted
    strict = column_drift("x", ref.columns["x"], cur.columns["x"], method="wasserstein", threshold=0.01)
    assert strict.drifted and strict.method == "wasserstein" and strict.threshold == 0.01
    assert column_drift("x", ref.columns["x"], cur.columns["x"], method="psi").method == "psi"


def test_profiles_of_json_records_merge_like_one_profile_and_survive_storage():
    rows = [{"x": float(v), "c": c} for v, c in zip(RNG.normal(size=3000), RNG.choice(list("ab"), 3000))]
    whole = profile_records(rows)
    merged = Profile.merge([profile_records(rows[:1000]), profile_records(rows[1000:])])
    assert merged.rows == whole.rows == 3000
    assert merged.columns["x"].numeric.n == 3000
    assert merged.columns["x"].numeric.sum == pytest.approx(whole.columns["x"].numeric.sum)
    assert merged.columns["c"].categories.counts == whole.columns["c"].categories.counts
    back = Profile.from_dict(loads(dumps(merged.to_dict())))
    assert back.columns["x"].numeric.sketch.count == 3000
    assert np.array_equal(back.columns["x"].numeric.sketch.values, merged.columns["x"].numeric.sketch.values)


def test_data_quality_counts_nulls_out_of_range_unseen_categories_and_type_errors():
    ref = profile_frame(pd.DataFrame({"x": np.linspace(0, 10, 1000), "c": ["a", "b"] * 500}))
    rows = ([{"x": 5.0, "c": "a"}] * 6 + [{"x": 50.0, "c": "a"}, {"x": None, "c": "zzz"},
            {"x": "oops", "c": "b"}, {"c": "a", "extra": 1}])
    q = data_quality(ref, profile_records(rows))
    cols = q["columns"]
    assert cols["x"]["null_ratio"] == pytest.approx(0.2)  # one null, one row without x
    assert cols["x"]["out_of_range_ratio"] == pytest.approx(0.1)
    assert cols["x"]["type_error_ratio"] == pytest.approx(0.1)
    assert cols["c"]["unseen_category_ratio"] == pytest.approx(0.1)
    assert q["extra_columns"] == ["extra"] and q["missing_columns"] == []
    assert q["schema_violations"] == 2  # the extra column and the string in x
