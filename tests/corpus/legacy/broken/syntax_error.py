from tidyllm.dspy_enhanced import DSPyEnhancedWrapper

wrapper = DSPyEnhancedWrapper(
print(wrapper)
