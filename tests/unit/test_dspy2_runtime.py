"""tidyq.dspy2: DSPy 2.x parts DSPy 3 removed, with their 2.x behaviour, on DSPy 3.4.

Against the loopback OpenAI stand-in (chat and embeddings) and Qdrant's in-memory mode. Pyserini
and Clarifai's SDK are not installed here: their clients are replaced by small stand-in modules
(third-party code only), and Clarifai's hit texts are served over loopback HTTP.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import types
from types import SimpleNamespace

import dspy
import pytest

import tidyq.dspy2 as t2
from tests.fakes.openai_server import fake_embedding


@pytest.fixture
def lm(openai_fake):
    lm = dspy.LM("openai/fake-model", api_base=openai_fake.base_url, api_key="sk-test", cache=False, num_retries=0)
    with dspy.context(lm=lm):
        yield openai_fake


def _user_text(request) -> str:
    return "\n".join(m["content"] for m in request.body["messages"] if m["role"] == "user")


# ---- ChainOfThoughtWithHint ---------------------------------------------------------------------

class Classify(dspy.Signature):
    """Classify the text."""

    text: str = dspy.InputField()
    answer: str = dspy.OutputField()


def test_a_hint_is_appended_to_the_last_input_and_kept_out_of_the_trace(lm):
    cot = t2.ChainOfThoughtWithHint(Classify)
    with dspy.context(trace=[]):
        pred = cot(text="I lost my card", hint="the right label is 12")
        trace = dspy.settings.trace
    assert pred.answer
    assert "I lost my card\n\t\t(secret hint: the right label is 12)" in _user_text(lm.requests[-1])
    assert trace[-1][1] == {"text": "I lost my card"}  # 2.x rewrote the trace entry without the hint


@pytest.mark.parametrize("hint", [None, ""])
def test_no_hint_runs_plain_chain_of_thought(lm, hint):
    cot = t2.ChainOfThoughtWithHint("question, context -> answer")
    cot(question="q?", context="ctx", hint=hint)
    assert "secret hint" not in _user_text(lm.requests[-1])
    assert "reasoning" in str(lm.requests[-1].body["messages"][0]["content"])  # a ChainOfThought


def test_rationale_type_becomes_dspy3s_rationale_field(lm):
    field = dspy.OutputField(desc="think it through")
    cot = t2.ChainOfThoughtWithHint("text -> answer", rationale_type=field)
    assert cot.module.predict.signature.output_fields["reasoning"].json_schema_extra["desc"] == "think it through"


# ---- Evaluate with 2.x's return_outputs / return_all_scores ---------------------------------------

def _devset():
    return [dspy.Example(question=f"q{i}", answer="x").with_inputs("question") for i in range(3)]


def _metric(example, pred, trace=None):
    return float(example.question != "q1")


@pytest.mark.parametrize("where", ["init", "call"])
def test_return_outputs_gives_2x_score_and_results(lm, where):
    flags = {"return_outputs": True}
    evaluate = t2.Evaluate(devset=_devset(), metric=_metric, num_threads=1, **(flags if where == "init" else {}))
    score, outputs = evaluate(dspy.Predict("question -> answer"), **(flags if where == "call" else {}))
    assert score == pytest.approx(66.67)
    assert [example.question for example, _, _ in outputs] == ["q0", "q1", "q2"]
    assert all(isinstance(pred, dspy.Prediction) and pred.get("answer") for _, pred, _ in outputs)
    assert [s for *_, s in outputs] == [1.0, 0.0, 1.0]


def test_return_all_scores_and_both_and_neither(lm):
    evaluate = t2.Evaluate(devset=_devset(), metric=_metric, num_threads=1)
    program = dspy.Predict("question -> answer")
    assert evaluate(program, return_all_scores=True) == (pytest.approx(66.67), [1.0, 0.0, 1.0])
    score, results, scores = evaluate(program, return_all_scores=True, return_outputs=True)
    assert len(results) == 3 and scores == [1.0, 0.0, 1.0]
    plain = evaluate(program)  # DSPy 3's EvaluationResult, which adds and compares as 2.x's float did
    assert plain.score == pytest.approx(66.67) and float(plain) + 0 == pytest.approx(66.67)


# ---- Clarifai client -> dspy.LM("clarifai/...") ------------------------------------------------------

def test_clarifai_client_becomes_a_dspy_lm_with_2x_defaults(openai_fake):
    lm = t2.Clarifai(model="https://clarifai.com/mistralai/completion/models/mistral-7B-Instruct", api_key="PAT",
                     n=2, inference_params={"temperature": 0.6})
    assert lm.model == "clarifai/mistralai.completion.mistral-7B-Instruct"
    assert lm.kwargs["temperature"] == 0.6 and lm.kwargs["max_tokens"] == 150 and lm.kwargs["n"] == 2
    bare = t2.Clarifai(api_key="PAT")
    assert bare.model == "clarifai/mistralai.completion.mistral-7B-Instruct" and bare.kwargs["temperature"] == 0.0
    routed = t2.Clarifai(model="https://clarifai.com/gcp/generate/models/gemini-pro", api_key="PAT",
                         api_base=openai_fake.base_url, cache=False, num_retries=0)
    assert routed("hello") and openai_fake.requests[-1].body["temperature"] == 0.0
    assert openai_fake.requests[-1].headers.get("Authorization") == "Bearer PAT"
    with pytest.raises(ValueError, match="Clarifai model URL"):
        t2.clarifai_model("mistral-7B")


# ---- cache_turn_on -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, on", [("True", True), ("false", False)])
def test_dsp_cachebool_false_turns_the_cache_off_as_in_2x(value, on):
    out = subprocess.run([sys.executable, "-c", "import dspy, tidyq.dspy2 as t; "
                          "print(t.cache_turn_on, dspy.cache.enable_disk_cache, dspy.cache.enable_memory_cache)"],
                         capture_output=True, text=True, env={**__import__("os").environ, "DSP_CACHEBOOL": value},
                         check=True, timeout=120)
    assert out.stdout.split() == [str(on)] * 3


# ---- OpenAIVectorizer and QdrantRM (qdrant-client in memory) --------------------------------------------

def test_openai_vectorizer_embeds_strings_and_examples_in_batches(openai_fake):
    vectorizer = t2.OpenAIVectorizer(model="text-embedding-3-small", embed_batch_size=2, api_key="sk-test",
                                     api_base=openai_fake.base_url)
    matrix = vectorizer(["alpha", "beta", "gamma"])
    assert matrix.shape == (3, 8) and str(matrix.dtype) == "float32"
    assert matrix[1].tolist() == pytest.approx(fake_embedding("beta"))
    assert [len(r.body["input"]) for r in openai_fake.requests] == [2, 1]
    assert openai_fake.requests[0].body["model"] == "text-embedding-3-small"
    example = dspy.Example(title="al", body="pha").with_inputs("title", "body")
    assert vectorizer([example])[0].tolist() == pytest.approx(fake_embedding("al pha"))


def _embed(texts):
    return [fake_embedding(t) for t in texts]


@pytest.fixture
def qdrant():
    qdrant_client = pytest.importorskip("qdrant_client")
    client = qdrant_client.QdrantClient(":memory:")
    docs = ["the cat sat on the mat", "stock markets fell sharply", "a dog chased the cat", "quantum computers"]
    client.create_collection("docs", vectors_config=qdrant_client.models.VectorParams(
        size=8, distance=qdrant_client.models.Distance.COSINE))
    client.upload_collection("docs", vectors=_embed(docs), payload=[{"text": d, "n": i} for i, d in enumerate(docs)])
    return client, qdrant_client.models


def test_qdrant_rm_returns_the_nearest_passages_as_dspy_retrieve_reads_them(qdrant):
    client, _ = qdrant
    rm = t2.QdrantRM(qdrant_collection_name="docs", qdrant_client=client, vectorizer=_embed, document_field="text")
    passages = rm("the cat sat on the mat", k=2)
    assert passages[0].long_text == "the cat sat on the mat" and len(passages) == 2
    with dspy.context(rm=rm):
        assert dspy.Retrieve(k=1)("stock markets fell sharply").passages == ["stock markets fell sharply"]


def test_qdrant_rm_adds_up_scores_over_queries_and_filters(qdrant):
    client, models = qdrant
    rm = t2.QdrantRM("docs", client, k=4, vectorizer=_embed, document_field="text")
    both = rm(["the cat sat on the mat", "a dog chased the cat", ""])
    assert {p.long_text for p in both[:2]} == {"the cat sat on the mat", "a dog chased the cat"}
    only = models.Filter(must=[models.FieldCondition(key="n", match=models.MatchValue(value=3))])
    assert [p.long_text for p in rm("cat", filter=only)] == ["quantum computers"]
    assert rm([]) == []


def test_qdrant_rm_uses_the_first_named_vector(qdrant):
    _, models = qdrant
    import qdrant_client

    client = qdrant_client.QdrantClient(":memory:")
    client.create_collection("named", vectors_config={"dense": models.VectorParams(size=8,
                                                                                   distance=models.Distance.COSINE)})
    client.upsert("named", points=[models.PointStruct(id=1, vector={"dense": fake_embedding("hello")},
                                                      payload={"document": "hello"})])
    rm = t2.QdrantRM("named", client, vectorizer=_embed)
    assert rm._vector_name == "dense" and rm("hello")[0].long_text == "hello"


# ---- Pyserini (a stand-in pyserini package: its FaissSearcher API) ----------------------------------------

class _Searcher:
    docs = {"d1": {"_id": "d1", "title": "Curry", "text": "kills cancer cells"},
            "d2": {"_id": "d2", "title": "Tea", "text": "is warm"}}
    made: list = []

    def __init__(self, index_dir=None, query_encoder=None):
        self.made.append(("local", index_dir, query_encoder))

    @classmethod
    def from_prebuilt_index(cls, index, encoder):
        searcher = cls.__new__(cls)
        cls.made.append(("prebuilt", index, encoder))
        return searcher

    @staticmethod
    def _init_encoder_from_str(name):
        return f"encoder:{name}"

    def search(self, query, k=10, threads=16):
        hits = [SimpleNamespace(docid="d2", score=0.5), SimpleNamespace(docid="d1", score=0.9)]
        return sorted(hits, key=lambda h: -h.score)[:k]

    def doc(self, docid):
        import json

        return SimpleNamespace(raw=lambda: json.dumps(self.docs[docid]))


@pytest.fixture
def pyserini(monkeypatch):
    package = types.ModuleType("pyserini")
    search = types.ModuleType("pyserini.search")
    info = types.ModuleType("pyserini.prebuilt_index_info")
    search.FaissSearcher = _Searcher  # type: ignore[attr-defined]
    info.FAISS_INDEX_INFO = {"beir-v1.0.0-nfcorpus.contriever-msmarco": {}}  # type: ignore[attr-defined]
    info.TF_INDEX_INFO = info.IMPACT_INDEX_INFO = {}  # type: ignore[attr-defined]
    for name, module in (("pyserini", package), ("pyserini.search", search), ("pyserini.prebuilt_index_info", info)):
        monkeypatch.setitem(sys.modules, name, module)
    _Searcher.made = []


def test_pyserini_prebuilt_index_looks_documents_up(pyserini):
    rm = t2.Pyserini(index="beir-v1.0.0-nfcorpus.contriever-msmarco", query_encoder="facebook/contriever-msmarco",
                     id_field="_id", text_fields=["title", "text"])
    assert _Searcher.made == [("prebuilt", "beir-v1.0.0-nfcorpus.contriever-msmarco",
                               "encoder:facebook/contriever-msmarco")]
    with dspy.context(rm=rm):
        assert dspy.Retrieve(k=2)("curry").passages == ["Curry kills cancer cells", "Tea is warm"]
    assert rm("curry", k=1)[0] == {"text": "Curry kills cancer cells", "long_text": "Curry kills cancer cells",
                                   "pid": "d1", "score": 0.9, "rank": 1}


def test_pyserini_local_index_reads_texts_from_the_dataset(pyserini):
    dataset = {"_id": ["d2", "d1"], "title": ["T2", "T1"], "text": ["two", "one"]}
    rm = t2.Pyserini(index="indexes/faiss", query_encoder="enc", dataset=dataset, text_fields=["title", "text"])
    assert _Searcher.made[0][:2] == ("local", "indexes/faiss")
    assert [(p.pid, p.text) for p in rm("q")] == [("d1", "T1 one"), ("d2", "T2 two")]
    with pytest.raises(ValueError, match="dataset"):
        t2.Pyserini(index="indexes/faiss", query_encoder="enc")


def test_a_missing_client_package_is_named():
    with pytest.raises(ImportError, match="pip install pyserini"):
        t2.Pyserini()
    with pytest.raises(ImportError, match="pip install clarifai"):
        t2.ClarifaiRM(clarifai_user_id="u", clarfiai_app_id="a", clarifai_pat="p")


# ---- ClarifaiRM (a stand-in clarifai SDK; hit texts over loopback HTTP) -------------------------------

@pytest.fixture
def texts_server():
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.headers.get("Authorization", ""))
            body = f"text of {self.path.strip('/')}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def test_clarifai_rm_searches_and_fetches_each_hits_text(monkeypatch, texts_server):
    url, seen = texts_server
    made = []

    class Search:
        def __init__(self, **kwargs):
            made.append(kwargs)

        def query(self, ranks, **kwargs):
            hit = lambda name: SimpleNamespace(input=SimpleNamespace(data=SimpleNamespace(  # noqa: E731
                text=SimpleNamespace(url=f"{url}/{ranks[0]['text_raw']}-{name}"))))
            return [SimpleNamespace(hits=[hit("a"), hit("b")])]

    for name in ("clarifai", "clarifai.client"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    search = types.ModuleType("clarifai.client.search")
    search.Search = Search  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "clarifai.client.search", search)
    monkeypatch.setenv("CLARIFAI_PAT", "env-pat")
    rm = t2.ClarifaiRM(clarifai_user_id="me", clarfiai_app_id="docs", k=2)
    assert made == [{"user_id": "me", "app_id": "docs", "top_k": 2, "pat": "env-pat"}]
    with dspy.context(rm=rm):
        assert dspy.Retrieve(k=2)("tea").passages == ["text of tea-a", "text of tea-b"]
    assert seen == ["Key env-pat", "Key env-pat"]
