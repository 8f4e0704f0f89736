"""One error type for everything a user can cause, and the mapping from library exceptions to it."""

from __future__ import annotations

import errno
import os
import re

OK, ERROR, USAGE, INTERRUPTED = 0, 1, 2, 130


class ChatllmError(Exception):
    """An expected failure: a one-line message, a hint naming what to do next, and an exit code."""

    def __init__(self, message: str, hint: str = "", exit_code: int = ERROR):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(ChatllmError):
    """Bad flags or input the user gave: exit 2."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message, hint, USAGE)


class ContextOverflowError(ChatllmError):
    """A prompt that cannot fit in the context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int, reserve: int = 0, what: str = "prompt"):
        need = f"{prompt_tokens} tokens" + (f" + {reserve} for the reply" if reserve else "")
        super().__init__(
            f"{what} too long: {need} exceed the {n_ctx}-token context window",
            "shorten the input, lower --max-tokens, or raise --ctx (up to the model's training context)",
        )
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


class NoChatTemplateError(ChatllmError):
    """A chat was asked of a model that has no chat template (a base model)."""

    def __init__(self, name: str):
        super().__init__(
            f"{name} has no chat template, so it cannot chat",
            "use `chatllm generate` for raw continuation, pick an instruct/chat model, "
            "or pass --chat-format chatml (or llama-3, gemma, ...)",
        )


class EngineUnavailable(ChatllmError):
    """The engine itself is out of reach (its server refused, vanished or went silent): every further call fails alike."""


class PipeClosed(Exception):
    """stdout's reader went away (`| head -1`): end quietly."""


_SECRET_NAME = re.compile(r"(TOKEN|API_KEY|APIKEY|SECRET|PASSWORD)", re.IGNORECASE)


def redact(text: str) -> str:
    """Remove secrets from text shown or stored: the HF token, every key-like variable's value, hf_ tokens."""
    # Remote entries name their key variable freely (api_key_env), so any variable whose name says it holds a
    # secret is scrubbed, not only the ones chatllm reads itself.
    for name, value in os.environ.items():
        if name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN") and len(value) >= 4 or \
                _SECRET_NAME.search(name) and len(value) >= 8 and not value.startswith(("/", "~")):
            text = text.replace(value, "***")
    return re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_***", text)


def from_exception(exc: BaseException, what: str = "") -> ChatllmError | None:
    """Translate a library or OS exception into a ChatllmError, or None when it is a real bug."""
    if isinstance(exc, ChatllmError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    where = f" ({what})" if what else ""
    status = _http_status(exc)
    if "LocalEntryNotFoundError" in names or "OfflineModeIsEnabled" in names:
        return ChatllmError(
            f"model not downloaded and the Hub is not reachable{where}",
            "connect to the network and run `chatllm pull MODEL`, or unset HF_HUB_OFFLINE / drop --offline",
        )
    # The Hub answers 401 for a repo that does not exist (so private names do not leak): its error code,
    # not the status, tells a missing repo from a gated one.
    if "RepositoryNotFoundError" in names and "GatedRepoError" not in names:
        return ChatllmError(f"no such repository on the Hub{where}", "check the owner/repo spelling; private repos need HF_TOKEN")
    if "GatedRepoError" in names or status in (401, 403):
        return ChatllmError(
            f"access denied by the Hub{where}: HTTP {status or 403}",
            "accept the model's licence on huggingface.co and set HF_TOKEN to a token that can read it",
        )
    if "RevisionNotFoundError" in names:
        return ChatllmError(f"no such revision on the Hub{where}", "check the @revision or drop it to use main")
    if "EntryNotFoundError" in names or status == 404:
        return ChatllmError(f"no such file on the Hub{where}", "run `chatllm show hf:OWNER/REPO:QUANT` style refs or check the file name")
    if names & {"ConnectionError", "ConnectError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutException",
                "RemoteProtocolError", "ChunkedEncodingError", "ProtocolError", "ReadError", "NetworkError"}:
        return ChatllmError(
            f"network error talking to the Hub{where}: {type(exc).__name__}",
            "check your connection (or HF_ENDPOINT) and run the same command again",
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return ChatllmError(f"disk full{where}", "free some space (or point HF_HOME elsewhere) and run the command again")
    if isinstance(exc, PermissionError):
        return ChatllmError(f"permission denied: {exc.filename or exc}", "check the file's permissions")
    if isinstance(exc, IsADirectoryError):
        return UsageError(f"is a directory: {exc.filename}", "give a file, not a directory")
    if isinstance(exc, FileNotFoundError):
        return UsageError(f"no such file: {exc.filename}", "check the path")
    if status is not None and status >= 500:
        return ChatllmError(f"the Hub answered HTTP {status}{where}", "try again in a moment")
    return None


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None
