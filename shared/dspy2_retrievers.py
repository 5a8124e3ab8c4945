"""DSPy 2.x's community retrievers that DSPy 3 removed, on DSPy 3.4 (public as ``tidyq.dspy2``).

Written from what dspy 2.5.43 did (its source is not copied). Each is an ``rm`` for
``dspy.configure(rm=...)``: DSPy 3's ``dspy.Retrieve`` still calls ``rm(query, k=k)`` and reads
``.long_text`` from each passage, so each returns a list of ``dotdict`` passages as in 2.x.
The vendors' clients are imported when a retriever is built; a missing one is an ImportError
naming the pip package.

- ``QdrantRM(qdrant_collection_name, qdrant_client, k=3, document_field="document", vectorizer=None,
  vector_name=None)``: one query vector per query, Qdrant's batch query, scores of a passage found
  by several queries added up, best first; without a vectorizer, fastembed's model that the client
  names (``FastEmbedVectorizer``), as in 2.x;
- ``OpenAIVectorizer(model="text-embedding-ada-002", embed_batch_size=1024, api_key=None)``: 2.x's
  dsp vectorizer (strings or Examples in, a float32 matrix out), on ``dspy.Embedder``;
- ``Pyserini(query_encoder=..., index=..., dataset=None, id_field="_id", text_fields=["text"])``:
  a pyserini FaissSearcher, prebuilt index or a local one with its dataset;
- ``ClarifaiRM(clarifai_user_id, clarfiai_app_id, clarifai_pat=None, k=3)`` (2.x's spelling of
  ``clarfiai_app_id`` kept): Clarifai's search, each hit's text fetched from its URL.
"""

from __future__ import annotations

import importlib
import json
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dspy
from dspy.dsp.utils import dotdict


def _require(module: str, package: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs the {package!r} package: pip install {package}") from exc


def _queries(query_or_queries: str | list[str]) -> list[str]:
    queries = [query_or_queries] if isinstance(query_or_queries, str) else list(query_or_queries)
    return [q for q in queries if q]


class OpenAIVectorizer:
    """2.x's dsp.modules.sentence_vectorizer.OpenAIVectorizer (see the module docstring)."""

    field_to_vectorize = "text_to_vectorize"

    def __init__(self, model: str = "text-embedding-ada-002", embed_batch_size: int = 1024,
                 api_key: str | None = None, **embedder_kwargs: Any):
        self.model = model
        self.embed_batch_size = embed_batch_size
        if api_key:
            embedder_kwargs["api_key"] = api_key
        self._embedder = dspy.Embedder(model if "/" in model else f"openai/{model}", batch_size=embed_batch_size,
                                       caching=False, **embedder_kwargs)

    def __call__(self, inp_examples: list) -> Any:
        import numpy as np

        texts = inp_examples if not inp_examples or isinstance(inp_examples[0], str) else \
            [" ".join(example[key] for key in example._input_keys) for example in inp_examples]
        return np.asarray(self._embedder(list(texts)), dtype=np.float32).reshape(len(texts), -1)


class FastEmbedVectorizer:
    """2.x's default vectorizer for QdrantRM: a fastembed model (the Qdrant client's default one)."""

    def __init__(self, model_name: str, batch_size: int = 256, **kwargs: Any):
        fastembed = _require("fastembed", "fastembed", "FastEmbedVectorizer")
        self._model = fastembed.TextEmbedding(model_name=model_name, **kwargs)
        self.batch_size = batch_size

    def __call__(self, texts: list) -> Any:
        import numpy as np

        return np.array(list(self._model.embed(texts, batch_size=self.batch_size)), dtype=np.float32)


class QdrantRM(dspy.Retrieve):
    """2.x's dspy.retrieve.qdrant_rm.QdrantRM (see the module docstring)."""

    def __init__(self, qdrant_collection_name: str, qdrant_client: Any, k: int = 3, document_field: str = "document",
                 vectorizer: Any = None, vector_name: str | None = None):
        self._models = _require("qdrant_client.models", "qdrant-client", "QdrantRM")
        self._collection_name = qdrant_collection_name
        self._client = qdrant_client
        self._vectorizer = vectorizer or FastEmbedVectorizer(qdrant_client.embedding_model_name)
        self._document_field = document_field
        self._vector_name = vector_name or self._first_vector_name()
        super().__init__(k=k)

    def forward(self, query_or_queries: str | list[str], k: int | None = None, filter: Any = None,  # noqa: A002
                **kwargs: Any) -> list[dotdict]:
        queries = _queries(query_or_queries)
        if not queries:
            return []
        requests = [self._models.QueryRequest(query=[float(x) for x in vector], using=self._vector_name,
                                              limit=k or self.k,
                                              with_payload=[self._document_field], filter=filter)
                    for vector in self._vectorizer(queries)]
        scores: dict[str, float] = defaultdict(float)
        for batch in self._client.query_batch_points(self._collection_name, requests=requests):
            for point in batch.points:
                scores[point.payload.get(self._document_field)] += point.score
        best = sorted(scores.items(), key=lambda item: item[1], reverse=True)[:k]
        return [dotdict({"long_text": passage}) for passage, _ in best]

    def _first_vector_name(self) -> str | None:
        vectors = self._client.get_collection(self._collection_name).config.params.vectors
        if not isinstance(vectors, dict):
            return None  # only the default, unnamed vector
        return next(iter(vectors), None) or None


class Pyserini:
    """2.x's dspy.Pyserini (dsp's PyseriniRetriever; see the module docstring)."""

    def __init__(self, query_encoder: str = "castorini/dkrr-dpr-nq-retriever", index: str = "wikipedia-dpr-dkrr-nq",
                 dataset: Any = None, id_field: str = "_id", text_fields: list[str] | None = None):
        search = _require("pyserini.search", "pyserini", "Pyserini")
        info = _require("pyserini.prebuilt_index_info", "pyserini", "Pyserini")
        self.encoder = search.FaissSearcher._init_encoder_from_str(query_encoder)
        self.dataset = dataset
        self.id_field = id_field
        self.text_fields = list(text_fields or ["text"])
        prebuilt = any(index in getattr(info, table, {})
                       for table in ("TF_INDEX_INFO", "FAISS_INDEX_INFO", "IMPACT_INDEX_INFO"))
        if prebuilt:
            self.searcher = search.FaissSearcher.from_prebuilt_index(index, self.encoder)
        else:
            if dataset is None:
                raise ValueError("Pyserini with a local index needs the dataset that was indexed (dataset=...)")
            self.searcher = search.FaissSearcher(index_dir=index, query_encoder=self.encoder)
            self.dataset_id_to_index = {docid: i for i, docid in enumerate(dataset[id_field])}

    def __call__(self, query: str, k: int = 10, threads: int = 16, **kwargs: Any) -> list[dotdict]:
        passages = []
        for rank, hit in enumerate(self.searcher.search(query, k=k, threads=threads), start=1):
            if self.dataset is not None:
                row = self.dataset_id_to_index[hit.docid]
                text = " ".join(self.dataset[field][row] for field in self.text_fields)
                pid = self.dataset[self.id_field][row]
            else:  # a prebuilt index looks documents up itself
                document = json.loads(self.searcher.doc(hit.docid).raw())
                text = " ".join(document[field] for field in self.text_fields)
                pid = document[self.id_field]
            passages.append(dotdict(text=text, long_text=text, pid=pid, score=hit.score, rank=rank))
        return passages


class ClarifaiRM(dspy.Retrieve):
    """2.x's dspy.retrieve.clarifai_rm.ClarifaiRM (see the module docstring)."""

    def __init__(self, clarifai_user_id: str, clarfiai_app_id: str, clarifai_pat: str | None = None, k: int = 3):
        search = _require("clarifai.client.search", "clarifai", "ClarifaiRM")
        self.app_id = clarfiai_app_id
        self.user_id = clarifai_user_id
        self.pat = clarifai_pat if clarifai_pat is not None else os.environ["CLARIFAI_PAT"]
        self.clarifai_search = search.Search(user_id=self.user_id, app_id=self.app_id, top_k=k, pat=self.pat)
        super().__init__(k=k)

    def retrieve_hits(self, hit: Any) -> str:
        import requests

        response = requests.get(hit.input.data.text.url, headers={"Authorization": f"Key {self.pat}"}, timeout=60)
        response.encoding = response.apparent_encoding
        return response.text

    def forward(self, query_or_queries: str | list[str], k: int | None = None, **kwargs: Any) -> list[dotdict]:
        passages = []
        for query in _queries(query_or_queries):
            hits = [hit for page in self.clarifai_search.query(ranks=[{"text_raw": query}], **kwargs)
                    for hit in page.hits]
            with ThreadPoolExecutor(max_workers=10) as pool:
                passages += [dotdict(long_text=text) for text in pool.map(self.retrieve_hits, hits)]
        return passages
