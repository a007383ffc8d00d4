"""Models for the crew: the offline `rules` analyst, or any model CrewAI's LLM can reach.

`RulesLLM` is a `crewai.BaseLLM` (model "rules", labelled "rules" everywhere) that drives
the agents through CrewAI with native tool calls: it returns OpenAI-style tool-call lists
chosen from the task, the agent and the tools on offer, and reads the tool results back
from the `role: "tool"` messages to write the agent's reasoning and final answer
(core.agents.analyst). It emits CrewAI's LLM events (started, stream chunks line by line,
completed with usage counted from its own text) so the reasoning streams like a real
model's.

The class is built on first use, after crewai was loaded: `RulesLLM` is importable from
this module (importing crewai at that moment); `make_llm()` is the factory the desk uses.
Nothing here imports crewai at module import time.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from typing import Any

from core.agents.analyst import ANALYST, content_text

RULES = "rules"

# provider -> environment variable holding its key (Secrets.openai_api_key also serves openai)
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
           "google": "GEMINI_API_KEY", "groq": "GROQ_API_KEY", "mistral": "MISTRAL_API_KEY",
           "deepseek": "DEEPSEEK_API_KEY", "openrouter": "OPENROUTER_API_KEY", "together": "TOGETHER_API_KEY",
           "xai": "XAI_API_KEY"}
OPENAI_COMPATIBLE = ("openai_compatible", "openai-compatible", "compatible", "custom", "local", "vllm", "lmstudio")

_lock = threading.Lock()
_class: type | None = None


def estimate_tokens(messages: Any) -> int:
    """One token per four characters (CrewAI's own fallback estimate)."""
    if isinstance(messages, str):
        return (len(messages) + 3) // 4
    total = 0
    for m in messages or []:
        if isinstance(m, dict):
            total += len(content_text(m.get("content")))
            if m.get("tool_calls"):
                total += len(json.dumps(m["tool_calls"], default=str))
        else:
            total += len(str(m))
    return (total + 3) // 4


def _offered(tools: Any) -> list[str]:
    names = []
    for t in tools or []:
        if isinstance(t, dict):
            fn = t.get("function") if isinstance(t.get("function"), dict) else t
            name = fn.get("name")
        else:
            name = getattr(t, "name", None)
        if name:
            names.append(str(name))
    return names


def _build_class() -> type:
    from crewai import BaseLLM
    from crewai.events.types.llm_events import LLMCallType
    from crewai.llms.base_llm import llm_call_context

    class RulesLLM(BaseLLM):
        """The deterministic analyst as a CrewAI model (offline, no network, labelled "rules")."""

        model: str = RULES
        llm_type: str = RULES
        provider: str = RULES

        def supports_function_calling(self) -> bool:
            return True

        def supports_stop_words(self) -> bool:
            return False

        def get_context_window_size(self) -> int:
            return 128_000

        def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
            return estimate_tokens(messages)

        def call(self, messages: Any, tools: Any = None, callbacks: Any = None, available_functions: Any = None,
                 from_task: Any = None, from_agent: Any = None, response_model: Any = None) -> Any:
            msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages or [])
            role = str(getattr(from_agent, "role", "") or "")
            task = getattr(from_task, "name", None)
            with llm_call_context():
                self._emit_call_started_event(messages=msgs, tools=tools, callbacks=callbacks,
                                              available_functions=available_functions, from_task=from_task,
                                              from_agent=from_agent)
                try:
                    reply = ANALYST.respond(msgs, role=role, task=task, offered=_offered(tools))
                except Exception as exc:
                    self._emit_call_failed_event(error=f"rules analyst failed: {exc!r}", from_task=from_task,
                                                 from_agent=from_agent)
                    raise
                prompt_tokens = estimate_tokens(msgs)
                if not reply.is_final:
                    calls = [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                              "function": {"name": name, "arguments": json.dumps(args, separators=(",", ":"))}}
                             for name, args in reply.tool_calls]
                    if calls:
                        usage = _usage(prompt_tokens, estimate_tokens(json.dumps(calls)))
                        self._track_token_usage_internal(usage)
                        self._emit_call_completed_event(response=calls, call_type=LLMCallType.TOOL_CALL,
                                                        from_task=from_task, from_agent=from_agent, messages=msgs,
                                                        usage=usage, finish_reason="tool_calls")
                        return calls
                    text = "I have no tool to call and nothing further to add."
                else:
                    text = reply.text or ""
                response_id = uuid.uuid4().hex[:12]
                for line in text.splitlines(keepends=True):  # the reasoning streams line by line
                    self._emit_stream_chunk_event(line, from_task=from_task, from_agent=from_agent,
                                                  call_type=LLMCallType.LLM_CALL, response_id=response_id)
                usage = _usage(prompt_tokens, estimate_tokens(text))
                self._track_token_usage_internal(usage)
                self._emit_call_completed_event(response=text, call_type=LLMCallType.LLM_CALL, from_task=from_task,
                                                from_agent=from_agent, messages=msgs, usage=usage,
                                                finish_reason="stop", response_id=response_id)
                return text

        async def acall(self, messages: Any, tools: Any = None, callbacks: Any = None, available_functions: Any = None,
                        from_task: Any = None, from_agent: Any = None, response_model: Any = None) -> Any:
            return self.call(messages, tools, callbacks, available_functions, from_task, from_agent, response_model)

    RulesLLM.__module__ = __name__
    return RulesLLM


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "successful_requests": 1}


def rules_llm_class() -> type:
    global _class
    with _lock:
        if _class is None:
            _class = _build_class()
        return _class


def __getattr__(name: str) -> Any:
    if name == "RulesLLM":
        from core.agents.offline import load_crewai

        load_crewai()
        return rules_llm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------- the factory
def _crew_settings(settings: Any) -> Any:
    return getattr(settings, "crew", settings)


def llm_label(settings: Any, override: str | None = None) -> str:
    """"rules", or "provider/model" as shown in the UI and in a proposal's source."""
    if override:
        return RULES if override.strip().lower() == RULES else override.strip()
    crew = _crew_settings(settings)
    provider = (crew.llm_provider or RULES).strip().lower()
    model = (crew.llm_model or RULES).strip()
    if provider == RULES:
        return RULES
    if model.startswith(provider + "/"):
        return model
    return f"{provider}/{model}"


def api_key_for(provider: str, secrets: Any = None, env: dict[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    if provider in ("openai", *OPENAI_COMPATIBLE):
        secret = getattr(secrets, "openai_api_key", None) if secrets is not None else None
        if secret is not None:
            value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
            if value:
                return value
    name = KEY_ENV.get(provider, f"{provider.upper()}_API_KEY")
    return env.get(name) or None


def make_llm(settings: Any, secrets: Any = None, *, model: str | None = None, base_url: str | None = None,
             api_key: str | None = None, env: dict[str, str] | None = None) -> Any:
    """The crew's model. `settings` is the whole Settings or its CrewSettings; `model` may
    override it ("rules" or "provider/model", as `--llm` gives it). crewai must be loaded."""
    crew = _crew_settings(settings)
    label = llm_label(settings, model)
    if label == RULES:
        return rules_llm_class()(model=RULES)
    provider, _, name = label.partition("/")
    provider = provider.lower()
    if not name:
        raise ValueError(f"a model needs provider/model, got {label!r}")
    url = base_url if base_url is not None else getattr(crew, "llm_base_url", None)
    if provider in OPENAI_COMPATIBLE:
        if not url:
            raise ValueError(f"an OpenAI-compatible model ({label}) needs crew.llm_base_url")
        full = f"openai/{name}"
    else:
        full = f"{provider}/{name}"
    key = api_key or api_key_for(provider, secrets if secrets is not None else getattr(settings, "secrets", None), env)
    limits = crew.limits
    # every call is bounded: a hung provider times out, a failing one is retried once, an answer stops at max_tokens
    kwargs: dict[str, Any] = {"model": full, "stream": True, "temperature": 0.0, "timeout": limits.call_timeout_seconds,
                              "max_retries": limits.call_max_retries, "max_tokens": limits.max_tokens}
    if url:
        kwargs["base_url"] = url
    if key:
        kwargs["api_key"] = key
    elif provider in OPENAI_COMPATIBLE or provider == "ollama":
        kwargs["api_key"] = "not-needed"  # local servers ignore it; the client insists on one
    from crewai import LLM

    try:
        return LLM(**kwargs)
    except ImportError as exc:  # a native provider whose SDK is not installed (anthropic, gemini, ...)
        raise ValueError(f"model {label}: {exc}") from None


__all__ = ["RULES", "make_llm", "llm_label", "api_key_for", "rules_llm_class", "estimate_tokens"]
