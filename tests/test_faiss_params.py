import pytest
from lyre.indexes import faiss_params as fp


def test_nlist_follows_sqrt_n_and_the_training_sample():
    # SciFact: 4 x sqrt(5183) = 288 -> 256, but 5183 / 39 = 132 supports only 128 lists.
    assert fp.target_nlist(5183) == 256
    assert fp.default_train_sample(5183) == 5183
    assert fp.default_nlist(5183, 5183) == 128
    # 1M: 4 x 1000 -> 4096 lists, 64 x 4096 = 262144 training vectors support it (262144 / 39 = 6721).
    assert fp.target_nlist(1_000_000) == 4096
    assert fp.default_train_sample(1_000_000) == 262_144
    assert fp.default_nlist(1_000_000, 262_144) == 4096
    # A small sample caps the lists: 10000 / 39 = 256.4 -> 256.
    assert fp.default_nlist(1_000_000, 10_000) == 256


def test_powers_of_two():
    assert [fp.floor_power_of_two(v) for v in (0.5, 1, 3, 4, 1000)] == [1, 1, 2, 4, 512]
    assert [fp.nearest_power_of_two(v) for v in (3, 5, 6, 241, 288)] == [4, 4, 8, 256, 256]


def test_m_is_a_gpu_legal_divisor_with_four_dims_per_subvector():
    assert fp.default_m(384) == 96
    assert fp.default_m(768) == 96
    assert fp.default_m(1536) == 96
    assert fp.default_m(1024) == 64
    assert fp.default_m(100) == 20
    assert fp.default_m(32) == 8
    assert fp.default_m(7) == 1
    assert fp.legal_m(384) == [1, 2, 3, 4, 8, 12, 16, 24, 32, 48, 64, 96]


def test_float16_tables_only_above_48_subquantizers():
    assert [fp.needs_float16_tables(m) for m in (8, 48, 56, 64, 96)] == [False, False, True, True, True]


@pytest.mark.parametrize(
    ("m", "nbits", "problem"), [(7, 8, "does not divide"), (6, 8, "not supported by GPU"), (8, 4, "bits")]
)
def test_illegal_pq_settings_are_refused(m, nbits, problem):
    with pytest.raises(ValueError, match=problem):
        fp.ivfpq_params(10_000, 384, m=m, nbits=nbits)


def test_ivfpq_params_defaults_and_overrides():
    params = fp.ivfpq_params(5183, 384)
    assert (params.nlist, params.m, params.nbits, params.train_sample) == (128, 96, 8, 5183)
    assert params.float16_lookup_tables
    assert params.factory == "IVF128,PQ96x8"
    assert fp.ivfpq_params(5183, 384, nlist=64, m=48).to_dict()["factory"] == "IVF64,PQ48x8"
    with pytest.raises(ValueError, match="nlist=9000"):
        fp.ivfpq_params(5183, 384, nlist=9000)


def test_auto_is_flat_for_small_corpora():
    assert fp.choose_index_type(fp.FLAT_MAX_ROWS - 1) == "flat"
    assert fp.choose_index_type(fp.FLAT_MAX_ROWS) == "ivfpq"
    assert fp.choose_index_type(10, "ivfpq") == "ivfpq"
    with pytest.raises(ValueError):
        fp.choose_index_type(10, "hnsw")


def test_nprobe_candidates():
    assert fp.nprobe_candidates(16) == [1, 2, 4, 8, 16]
    assert fp.nprobe_candidates(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert fp.nprobe_candidates(4096)[-1] == 2048
