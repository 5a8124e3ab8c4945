"""Legacy: the Bedrock-enhanced wrapper through a module alias, positional model id."""
import tidyllm.dspy_bedrock_enhanced as bedrock

w = bedrock.DSPyBedrockEnhancedWrapper("anthropic.claude-3-haiku-20240307-v1:0", region_name="us-east-1",
                                      cache_ttl=600)
module = w.create_module("question -> answer")
result = module.predict(question="Name a prime number")
print(result.answer)
print(w.get_info()["backend"] in ("bedrock", "mock"))
