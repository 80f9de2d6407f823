"""User simulators for the multi-turn dialogue mode: a frozen causal LM prompted to play the user.

A user simulator is any callable ``user_fn(conversation) -> str | None``: it gets the
conversation so far as chat messages (``{"role": "system"|"user"|"assistant", "content"}``,
ending with the assistant's turn) and returns the user's next turn, or ``None`` to end the
conversation. :class:`LanguageModelUser` is one, on a causal LM of its own.

Example:
    >>> from rlhf_env.models import build_tiny_llama, build_tiny_tokenizer
    >>> tokenizer = build_tiny_tokenizer()
    >>> user = LanguageModelUser(build_tiny_llama(tokenizer), tokenizer, max_new_tokens=8)
    >>> reply = user([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])
    >>> reply is None or isinstance(reply, str)
    True
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase

from rlhf_env.models.modules import device_of

#: The default system instruction of :class:`LanguageModelUser`.
DEFAULT_USER_INSTRUCTION = (
    "You are a human chatting with an AI assistant. Write the human's next message: one or two "
    "short, casual sentences in the first person, reacting to what the assistant just said. "
    "Never act as the assistant."
)

#: Tokens that close a turn in common chat templates; those in a tokenizer's vocabulary stop
#: generation, beside its EOS and the model's generation-config EOS.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

# Where a model without a chat template starts the next "Role:" line (the reply ends there).
_NEXT_ROLE_LINE = re.compile(r"\n\s*(?:User|Assistant|System):")

Message = Mapping[str, str]


class LanguageModelUser:
    """A frozen causal LM that plays the user of a dialogue, prompted by a system instruction.

    The conversation is shown to the model with the roles swapped: the instruction is the
    system message, the conversation's assistant turns become ``"user"`` messages and its user
    turns ``"assistant"`` messages (the conversation's own system message, the policy's, is
    left out), so that the model writes the next ``"assistant"`` message: the user's turn. The
    tokenizer's chat template formats the messages; a tokenizer without one gets plain
    ``"System: ...\\nUser: ...\\nAssistant:"`` lines, and the reply ends where the model starts
    another ``"Role:"`` line.

    The model is only read, never trained: generation runs under :func:`torch.no_grad` in eval
    mode, and each module's training flag is restored afterwards. It must not be the policy
    being trained (its replies would drift with the policy and the user would co-adapt); pass a
    different model or a frozen copy (``rlhf_env.models.frozen_copy(policy)``).

    Args:
        model: a causal LM (``generate`` and a ``config``) whose vocabulary is ``tokenizer``'s.
        tokenizer: its tokenizer.
        instruction: the system message that asks the model to play the user.
        max_new_tokens: the most tokens of one user turn.
        temperature: the sampling temperature (> 0), or ``None`` for greedy decoding.
        seed: with sampling, each reply is drawn from a generator seeded by ``seed`` and the
            prompt, so a user is reproducible and replies do not depend on call order; the
            global RNG is left as it was. Unused when greedy.
        max_prompt_tokens: the most prompt tokens; longer conversations lose their oldest turns
            (then, if one turn is still too long, its start). ``None``: the model's position
            limit less ``max_new_tokens``, or no limit for a model without one.

    Example:
        >>> from rlhf_env.models import build_tiny_llama, build_tiny_tokenizer, frozen_copy
        >>> tokenizer = build_tiny_tokenizer()
        >>> policy = build_tiny_llama(tokenizer)
        >>> user = LanguageModelUser(frozen_copy(policy), tokenizer, max_new_tokens=8)
        >>> [m["role"] for m in user.messages_for([
        ...     {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])]
        ['system', 'assistant', 'user']
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        instruction: str = DEFAULT_USER_INSTRUCTION,
        max_new_tokens: int = 48,
        temperature: float | None = None,
        seed: int = 0,
        max_prompt_tokens: int | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if temperature is not None and not temperature > 0:
            raise ValueError(
                f"temperature must be positive, got {temperature}; use None for greedy decoding"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.instruction = instruction
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.max_prompt_tokens = self._prompt_limit(max_prompt_tokens)
        self.stop_ids = self._stop_ids()
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))

    # -- what the model sees ------------------------------------------------------------------

    def messages_for(self, conversation: Sequence[Message]) -> list[dict[str, str]]:
        """The role-swapped chat shown to the model: the instruction as system message, then
        the conversation's turns with ``"user"`` and ``"assistant"`` exchanged (its system
        messages dropped).

        Raises:
            ValueError: a message's role is not ``"system"``, ``"user"`` or ``"assistant"``, or
                the conversation ends with a user turn (the user simulator speaks after the
                assistant).
        """
        swap = {"user": "assistant", "assistant": "user"}
        messages = [{"role": "system", "content": self.instruction}]
        for message in conversation:
            role = message["role"]
            if role == "system":
                continue
            if role not in swap:
                raise ValueError(
                    f"message role must be 'system', 'user' or 'assistant', got {role!r}"
                )
            messages.append({"role": swap[role], "content": message["content"]})
        if messages[-1]["role"] == "assistant":
            raise ValueError(
                "the conversation ends with a user turn; the user simulator is called after the "
                "assistant's turn"
            )
        return messages

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """``messages`` as the text the model continues: the chat template with the generation
        prompt, or ``"Role: content"`` lines ending in ``"Assistant:"``."""
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        lines = [f"{message['role'].capitalize()}: {message['content']}" for message in messages]
        return "\n".join([*lines, "Assistant:"])

    def prompt_ids(self, conversation: Sequence[Message]) -> list[int]:
        """The prompt's token ids, the oldest turns dropped (and then the start cut) to keep
        within ``max_prompt_tokens``."""
        messages = self.messages_for(conversation)
        while True:
            ids = self._encode(self.prompt_text(messages))
            if self.max_prompt_tokens is None or len(ids) <= self.max_prompt_tokens:
                return ids
            if len(messages) <= 2:  # the instruction and the last turn: cut the start
                return ids[-self.max_prompt_tokens :]
            del messages[1]  # the oldest turn

    # -- generation ---------------------------------------------------------------------------

    def reply_ids(self, conversation: Sequence[Message]) -> list[int]:
        """The token ids of the user's next turn (at most ``max_new_tokens``), without the
        token that stopped it."""
        prompt = self.prompt_ids(conversation)
        device = device_of(self.model)
        input_ids = torch.tensor([prompt], device=device)  # (1, T)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.temperature is not None,
            temperature=self.temperature if self.temperature is not None else 1.0,
            top_k=None,
            top_p=None,
            eos_token_id=sorted(self.stop_ids) or None,
            pad_token_id=_pad_id(self.tokenizer),
        )
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            with (
                torch.no_grad(),
                _seeded(self._sample_seed(prompt), device, self.temperature is not None),
            ):
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=config,
                )  # (1, T + new)
        finally:
            for module, training in modes:
                module.training = training
        new = output[0, input_ids.shape[1] :].tolist()
        for index, token in enumerate(new):
            if token in self.stop_ids:
                return new[:index]
        return new

    def __call__(self, conversation: Sequence[Message]) -> str | None:
        """The user's next turn, stripped, or ``None`` when the model writes nothing."""
        text = self.tokenizer.decode(self.reply_ids(conversation), skip_special_tokens=True)
        if not self.has_chat_template:
            text = _NEXT_ROLE_LINE.split(text, maxsplit=1)[0]
        text = text.strip()
        return text or None

    # -- helpers ------------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        # A chat template writes its own BOS; plain text gets the tokenizer's special tokens.
        return self.tokenizer(text, add_special_tokens=not self.has_chat_template)["input_ids"]

    def _prompt_limit(self, max_prompt_tokens: int | None) -> int | None:
        if max_prompt_tokens is not None:
            if max_prompt_tokens < 1:
                raise ValueError(f"max_prompt_tokens must be at least 1, got {max_prompt_tokens}")
            return max_prompt_tokens
        config = getattr(self.model, "config", None)
        limit = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        if limit is None:
            return None
        if limit <= self.max_new_tokens:
            raise ValueError(
                f"max_new_tokens = {self.max_new_tokens} leaves no room for a prompt in the "
                f"model's {limit} positions; lower it"
            )
        return limit - self.max_new_tokens

    def _stop_ids(self) -> frozenset[int]:
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        generation_eos = getattr(
            getattr(self.model, "generation_config", None), "eos_token_id", None
        )
        if isinstance(generation_eos, int):
            ids.add(generation_eos)
        elif generation_eos is not None:
            ids.update(int(i) for i in generation_eos)
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
        return frozenset(ids)

    def _sample_seed(self, prompt: list[int]) -> int:
        """A seed from ``seed`` and the prompt: stable across runs and processes."""
        return (self.seed * 1_000_003 + zlib.crc32(str(prompt).encode())) % 2**63


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device, sampling: bool) -> Iterator[None]:
    """Seed the CPU generator (and the model's CUDA device's) for one sampled generation and
    restore them afterwards; nothing to do when greedy."""
    if not sampling:
        yield
        return
    cuda = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if (device.type == "cuda")
        else []
    )
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return None
