"""Legacy: the enhanced wrapper with retry, cache and a signature module."""
from tidyllm.dspy_enhanced import DSPyEnhancedWrapper

# retries and cache as the old wrapper spelled them
wrapper = DSPyEnhancedWrapper(max_retries=2, enable_caching=False)
qa = wrapper.create_module("question -> answer")
print(qa.predict(question="What is 2+2?").answer)
print(wrapper.predict("question -> answer", question="Capital of France?").answer)
