"""Legacy: the simple dspy_wrapper under another name, with validation settings."""
from tidyllm.dspy_wrapper import DSPyWrapper as SimpleWrapper


def main():
    wrapper = SimpleWrapper(model="openai/gpt-4o-mini", min_length=1, max_length=2000)
    print(wrapper.predict("question -> answer", question="Say hi").answer)
    print(wrapper.predict("text -> sentiment", text="I like it").sentiment)


if __name__ == "__main__":
    main()
