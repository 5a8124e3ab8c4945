"""`tidyq migrate` moving removed 2.x names to tidyq.dspy2, and DSPy 2.5's fine-tuning API to DSPy 3's,
on the shapes found in stanfordnlp/dspy 2.5.43's examples (tests/corpus/public)."""

from __future__ import annotations

from shared.migrate.transform import migrate_source
from tests.migrate_support import removed_uses


def migrate(source):
    new, findings = migrate_source(source, "x.py")
    compile(new, "x.py", "exec")
    return new, findings


def test_chain_of_thought_with_hint_moves_to_the_runtime():
    # examples/finetune/_unpolished_databricks_finetuning_demo.py
    new, findings = migrate("import dspy\n\nclass Program(dspy.Module):\n    def __init__(self):\n"
                            "        self.classify = dspy.ChainOfThoughtWithHint(Classify)\n\n"
                            "    def forward(self, text):\n        return self.classify(text=text, hint=None)\n")
    assert not findings
    assert "from tidyq.dspy2 import ChainOfThoughtWithHint\n" in new
    assert "self.classify = ChainOfThoughtWithHint(Classify)" in new


def test_retrievers_and_vectorizer_imports_move():
    # examples/integrations/qdrant/qdrant_retriever_example.ipynb, clarifai_llm_retriever_example.ipynb
    new, findings = migrate("from dsp.modules.sentence_vectorizer import OpenAIVectorizer\n"
                            "vectorizer = OpenAIVectorizer(model='text-embedding-3-small')\n"
                            "from dspy.retrieve.qdrant_rm import QdrantRM\n"
                            "rm = QdrantRM(qdrant_client=client, qdrant_collection_name='c', vectorizer=vectorizer, "
                            "document_field='text')\n"
                            "import dspy\nfrom dspy.retrieve.clarifai_rm import ClarifaiRM as RM\n"
                            "r = RM(clarifai_user_id=U, clarfiai_app_id=A, clarifai_pat=P, k=2)\n")
    assert not findings and not removed_uses(new)
    assert "from tidyq.dspy2 import OpenAIVectorizer\n" in new and "from tidyq.dspy2 import QdrantRM\n" in new
    assert "from tidyq.dspy2 import ClarifaiRM as RM\n" in new and "dsp" not in new.replace("dspy", "")


def test_clarifai_and_pyserini_clients_move_and_a_taken_name_is_qualified():
    # examples/pyserini.ipynb; the Clarifai notebook also imports langchain's Clarifai
    new, findings = migrate("import dspy\nfrom langchain.vectorstores import Clarifai as store\n"
                            "llm = dspy.Clarifai(model=MODEL_URL, api_key=PAT, n=2, "
                            "inference_params={'max_tokens': 100})\n"
                            "rm = dspy.Pyserini(index='beir-v1.0.0-nfcorpus.contriever-msmarco', "
                            "query_encoder='facebook/contriever-msmarco', id_field='_id', "
                            "text_fields=['title', 'text'])\n")
    assert not findings
    assert "llm = tidyq.dspy2.Clarifai(model=MODEL_URL" in new and "import tidyq.dspy2\n" in new
    assert "rm = Pyserini(index=" in new and "from tidyq.dspy2 import Pyserini\n" in new


def test_cache_turn_on_moves_with_its_dsp_import():
    # examples/text_to_sql/financial_data_text_to_sql.ipynb
    new, findings = migrate("from dsp.modules.cache_utils import cache_turn_on\n\ncache_turn_on\n")
    assert not findings and new == "from tidyq.dspy2 import cache_turn_on\n\ncache_turn_on\n"


def test_a_dsp_import_mixing_moved_and_removed_names_reports_the_removed_one():
    new, findings = migrate("from dsp.modules.sentence_vectorizer import OpenAIVectorizer, CohereVectorizer\n"
                            "v = OpenAIVectorizer()\nw = CohereVectorizer()\n")
    assert findings and all("CohereVectorizer" in f.message or "sentence_vectorizer" in f.message for f in findings)
    assert "from tidyq.dspy2 import OpenAIVectorizer\n" in new


def test_evaluate_moves_only_where_2x_keywords_are_used():
    # examples/vlm/mmmu.ipynb: the flag on the constructor, the tuple unpacked from the call
    source = ("import dspy\nfrom dspy.evaluate import Evaluate\n"
              "evaluate_mmmu = Evaluate(metric=m, num_threads=50, devset=dev, max_errors=500, return_outputs=True)\n"
              "scores, outputs = evaluate_mmmu(mmmu)\n")
    new, findings = migrate(source)
    assert not findings and "from tidyq.dspy2 import Evaluate\n" in new and "dspy.evaluate" not in new
    assert migrate(new) == (new, [])  # a second run leaves it alone
    new, findings = migrate("import dspy\nev = dspy.Evaluate(devset=d, metric=m)\n"
                            "s, o = ev(p, return_all_scores=True)\n")
    assert not findings and "ev = Evaluate(devset=d, metric=m)" in new
    plain = "import dspy\nev = dspy.Evaluate(devset=d, metric=m)\nprint(ev(p))\n"
    assert migrate(plain) == (plain, [])


def test_2x_evaluate_keywords_without_the_evaluator_in_the_file_are_reported():
    new, findings = migrate("from helpers import evaluator\nscore, outputs = evaluator(p, return_outputs=True)\n")
    assert len(findings) == 1 and "tidyq.dspy2.Evaluate" in findings[0].message
    assert "# tidyq-migrate: return_outputs=" in new


def test_finetune_data_format_becomes_train_data_format():
    # examples/finetune/_unpolished_finetune_demo.ipynb
    source = ("import dspy\nfrom typing import Optional\n"
              "from dspy.clients.provider import Provider, TrainingJob, DataFormat\n\n"
              "class CustomProvider(Provider):\n    @staticmethod\n    def finetune(\n        job: TrainingJob,\n"
              "        model: str,\n        train_kwargs=None,\n        data_format: Optional[DataFormat] = None,\n"
              "    ) -> str:\n        print(data_format, x.data_format, f(data_format=1), DataFormat.chat)\n"
              "        return model\n\n"
              "job = lm.finetune(\n  train_data=training_data,\n  train_kwargs=train_kwargs,\n"
              "  data_format=\"chat\"\n)\n"
              "job = lm.finetune(train_data=training_data)\n")
    new, findings = migrate(source)
    assert not findings
    assert "from dspy.clients.provider import Provider, TrainingJob\n" in new
    assert "from dspy.clients.utils_finetune import TrainDataFormat\n" in new
    assert "        train_data_format: Optional[TrainDataFormat] = None,\n" in new
    assert "print(train_data_format, x.data_format, f(data_format=1), TrainDataFormat.CHAT)" in new
    assert '  train_data_format="chat"\n' in new
    assert "job = lm.finetune(train_data=training_data, train_data_format=None)\n" in new


def test_finetune_of_a_class_that_is_no_provider_is_left_alone():
    source = "import dspy\nclass Other:\n    def finetune(self, data_format=None):\n        return data_format\n"
    assert migrate(source) == (source, [])


def test_a_name_moved_under_a_new_name_keeps_the_old_binding():
    new, findings = migrate("from dsp.modules.pyserini import PyseriniRetriever\nr = PyseriniRetriever(index='i')\n"
                            "import dspy.retrieve.qdrant_rm\nq = dspy.retrieve.qdrant_rm.QdrantRM('c', client)\n")
    assert not findings and not removed_uses(new)
    assert "from tidyq.dspy2 import QdrantRM, Pyserini as PyseriniRetriever\n" in new
    assert "r = PyseriniRetriever(index='i')" in new
    assert "q = QdrantRM('c', client)" in new and "dspy.retrieve" not in new


def test_evaluate_splits_from_the_names_that_stay_in_dspy():
    new, findings = migrate("from dspy.evaluate import Evaluate, answer_exact_match\n"
                            "ev = Evaluate(devset=d, metric=answer_exact_match, return_all_scores=True)\n")
    assert not findings
    assert "from dspy.evaluate import answer_exact_match\nfrom tidyq.dspy2 import Evaluate\n" in new


def test_2_4s_bootstrap_finetune_compile_settings_are_reported():
    # examples/qa/hotpot/multihop_finetune.ipynb: `tp` is first another optimizer, then BootstrapFinetune
    new, findings = migrate("from dspy.teleprompt import BootstrapFewShotWithRandomSearch, BootstrapFinetune\n"
                            "tp = BootstrapFewShotWithRandomSearch(metric=m)\n"
                            "p = tp.compile(BasicMH(), trainset=t, valset=v)\n"
                            "config = dict(target='t5-large', epochs=2, bf16=True, bsize=6, accumsteps=2, lr=5e-5)\n"
                            "tp = BootstrapFinetune(metric=None)\n"
                            "t5 = tp.compile(BasicMH(), teacher=ensemble, trainset=t, **config)\n"
                            "ok = BootstrapFinetune(metric=m).compile(student=s, trainset=t, teacher=None)\n"
                            "old = BootstrapFinetune().compile(s, trainset=t, target='t5-large')\n")
    prefix = "BootstrapFinetune.compile in DSPy 3 takes student, trainset, teacher only"
    assert [(f.line, f.message.split(":")[0]) for f in findings] == [(6, f"{prefix} (not **kwargs)"),
                                                                     (8, f"{prefix} (not target)")]
    assert new.count("# tidyq-migrate: BootstrapFinetune.compile") == 2


def test_inspect_history_with_2x_skip_moves_to_tidyq_dspy2_and_prints_the_earlier_call(openai_fake, capsys):
    # examples/skycamp2023.ipynb (2.5.43): llama.inspect_history(n=1, skip=2) on a legacy client; DSPy 3's
    # inspect_history has no skip (TypeError: unexpected keyword argument 'skip')
    import uuid

    from shared.migrate.transform import migrate_source

    tag = uuid.uuid4().hex[:8]
    source = ("import dspy\n"
              f"llama = dspy.OpenAI(model='gpt-4o-mini', api_base='{openai_fake.base_url}', api_key='k')\n"
              f"for word in ['first', 'second', 'third']:\n    llama(f'{{word}} {tag}')\n"
              "llama.inspect_history(n=1, skip=2)\n")
    new, findings = migrate_source(source, "skycamp.py")
    assert findings == [] and "inspect_history(llama, n=1, skip=2)" in new and "from tidyq.dspy2 import" in new, new
    exec(compile(new, "skycamp.py", "exec"), {})  # noqa: S102 - the migrated program, run as it is
    printed = capsys.readouterr().out
    assert f"first {tag}" in printed and f"second {tag}" not in printed and f"third {tag}" not in printed
    assert openai_fake.request_count == 3
