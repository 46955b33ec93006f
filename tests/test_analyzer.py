import pytest
from lyre.basics.errors import LyreError
from lyre.indexes.analyzer import LUCENE_ENGLISH_STOPWORDS, Analyzer, stopword_list


def test_default_is_anserini_english():
    analyzer = Analyzer()
    assert analyzer.analyze("The Running dogs' owner's cats are in U.S.A. since 3.14 and 1,000 years") == [
        "run", "dog", "owner", "cat", "u.s.a", "sinc", "3.14", "1,000", "year",
    ]  # fmt: skip


def test_tokenizer_splits_hyphens_keeps_alphanumerics_and_contractions():
    assert Analyzer(stemmer="none").words("IL-6 p53 don't COVID-19 e.g. foo_bar") == [
        "il", "6", "p53", "don't", "covid", "19", "e.g", "foo_bar",
    ]  # fmt: skip


def test_porter_and_snowball_english_differ_where_expected():
    assert Analyzer(stemmer="porter").analyze("generously") == ["gener"]
    assert Analyzer(stemmer="english").analyze("generously") == ["generous"]


def test_stopwords_are_removed_before_stemming():
    assert len(LUCENE_ENGLISH_STOPWORDS) == 33
    assert Analyzer().analyze("this is not such a thing") == ["thing"]
    assert Analyzer(stopwords="none", stemmer="none").analyze("this is") == ["this", "is"]
    assert Analyzer(stopwords=("thing",), stemmer="none").analyze("this thing") == ["this"]
    assert "und" in stopword_list("bm25s-german")


def test_other_language_stemmer():
    assert Analyzer(stopwords="none", stemmer="german").analyze("Häuser") == ["haus"]


def test_cjk_bigrams_and_lone_characters():
    analyzer = Analyzer.preset("cjk-bigram")
    assert analyzer.analyze("中华人民 Ｄogs 的 日本語テキスト") == [
        "中华",
        "华人",
        "人民",
        "dogs",
        "的",
        "日本",
        "本語",
        "語テ",
        "テキ",
        "キス",
        "スト",
    ]


def test_round_trip_records_versions():
    analyzer = Analyzer(stopwords=("a", "b"), stemmer="english")
    record = analyzer.to_dict()
    assert set(record["versions"]) == {"PyStemmer", "bm25s"}
    again = Analyzer.from_dict(record)
    assert again == analyzer and again.versions == record["versions"]


@pytest.mark.parametrize(
    "fields", [{"stemmer": "klingon"}, {"stopwords": "klingon"}, {"kind": "shingle"}, {"token_pattern": "("}]
)
def test_bad_fields_are_refused_with_a_lyre_error(fields):
    with pytest.raises(LyreError):
        Analyzer(**fields).analyze("x")


def test_unknown_record_field_is_refused():
    with pytest.raises(LyreError, match="unknown fields"):
        Analyzer.from_dict({"stemmer": "porter", "lemmatize": True})


def test_an_analyzer_is_described_by_its_preset_and_steps():
    assert Analyzer().describe() == "english (porter stemmer, lucene stopwords)"
    assert Analyzer.preset("cjk-bigram").describe() == "cjk-bigram (cjk-bigram, no stemmer, lucene stopwords)"
    assert Analyzer.preset("plain").describe() == "plain (no stemmer, no stopwords)"
    assert Analyzer(stemmer="german", stopwords=("der", "die")).describe() == (
        "custom (german stemmer, 2 custom stopwords)"
    )


def test_the_analyzer_suggested_for_queries_without_terms():
    english = Analyzer()
    assert english.analyze("中文查询") == ["中文查询"]  # one word: matches only that very run of characters
    assert english.suggest_for(["中文查询", "the of"]) == "cjk-bigram"
    assert english.suggest_for(["the of", "this is not"]) == "plain"  # every word a stopword
    assert english.suggest_for(["zebrafish quasar"]) is None  # words the documents lack: no analyzer helps
    assert english.suggest_for(["?!"]) is None
    assert Analyzer.preset("cjk-bigram").suggest_for(["中文查询"]) is None
    assert Analyzer.preset("plain").suggest_for(["the of"]) is None
