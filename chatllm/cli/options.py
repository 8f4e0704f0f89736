"""Flags shared by the commands, as plain `Annotated` aliases; cli/context.py turns the ones a command has into Settings."""

from pathlib import Path
from typing import Annotated, List, Optional

import typer

PANEL_MODEL = "Model and device"
PANEL_SAMPLING = "Sampling"


def _model_opt(*decls: str, help: str):
    return typer.Option(*decls, help=help, rich_help_panel=PANEL_MODEL, show_default=False)


def _sampling_opt(*decls: str, help: str, metavar: str | None = None):
    return typer.Option(*decls, help=help, rich_help_panel=PANEL_SAMPLING, show_default=False, metavar=metavar)


Model = Annotated[Optional[str], _model_opt(
    "--model", "-m", help="Alias, hf:owner/repo:QUANT, hf:owner/repo/file.gguf[@rev], a .gguf path, or a server: openai:URL#MODEL "
         "[env CHATLLM_MODEL]")]
Device = Annotated[Optional[str], _model_opt("--device", help="auto, cpu, cuda or metal [default: auto]")]
GpuLayers = Annotated[Optional[str], _model_opt("--gpu-layers", help="Layers to offload to the GPU: N or all")]
Ctx = Annotated[Optional[int], _model_opt("--ctx", help="Context window in tokens [default: the model's, at most 8192]")]
Threads = Annotated[Optional[int], _model_opt(
    "--threads", help="CPU threads; 0 or unset: physical cores minus those other processes keep busy")]
ChatFormat = Annotated[Optional[str], _model_opt(
    "--chat-format", help="Use a built-in chat format (chatml, llama-3, gemma, ...) instead of the GGUF's template")]
Offline = Annotated[bool, _model_opt("--offline", help="Use only downloaded models [env HF_HUB_OFFLINE=1]")]
Parallel = Annotated[Optional[int], _model_opt(
    "--parallel", help="Items at once (rows, lines, summary parts): sequences per decode on a local model, requests "
                       "to a server; 1 is the exact one-at-a-time path [default: the entry's `parallel`, else 4 on a "
                       "CPU with up to 2 cores, up to 8 with more, 16 on a GPU; 1 for a server]")]

MaxTokens = Annotated[Optional[int], _sampling_opt("--max-tokens", "-n", help="Longest reply in tokens [default: 512]")]
Temperature = Annotated[Optional[float], _sampling_opt("--temperature", "-t", help="0 is deterministic [default: 0.7]")]
TopP = Annotated[Optional[float], _sampling_opt("--top-p", help="Nucleus sampling, in (0, 1] [default: 0.95]")]
TopK = Annotated[Optional[int], _sampling_opt("--top-k", help="Top-k sampling, 0 for off [default: 40]")]
Seed = Annotated[Optional[int], _sampling_opt("--seed", help="Random seed for reproducible sampling")]
Draft = Annotated[Optional[str], _sampling_opt(
    "--draft", metavar="auto|off",
    help="Drafts from the prompt (speculative decoding): auto uses them where they pay; off is the exact path "
         "[default: auto]")]
Stop = Annotated[Optional[List[str]], _sampling_opt("--stop", help="Stop when this text appears (repeatable)")]
PANEL_REASONING = "Reasoning models"


def _reasoning_opt(*decls: str, help: str):
    return typer.Option(*decls, help=help, rich_help_panel=PANEL_REASONING, show_default=False)


Think = Annotated[Optional[bool], _reasoning_opt(
    "--think/--no-think", help="Let a reasoning model think before it answers, or not (its template's switch, else an "
                               "empty reasoning block) [default: the model's own]")]
ReasoningEffort = Annotated[Optional[str], _reasoning_opt(
    "--reasoning-effort", help="How hard a model with effort levels thinks (gpt-oss): low, medium or high")]
ReasoningBudget = Annotated[Optional[int], _reasoning_opt(
    "--reasoning-budget", help="After N reasoning tokens the block is closed and the answer begins")]
ShowThinking = Annotated[bool, _reasoning_opt(
    "--show-thinking", help="In a pipe, write the reasoning trace to stdout too, between <think> tags, before the answer")]
HideThinking = Annotated[bool, _reasoning_opt(
    "--hide-thinking", help="In a terminal, do not draw the trace while it streams (one summary line only)")]

NoCache = Annotated[bool, typer.Option(
    "--no-cache", help="Neither load nor save the model's KV state on disk (see `chatllm cache`).")]

PANEL_TOOLS = "Tools"


def _tools_opt(*decls: str, help: str, metavar: str | None = None):
    return typer.Option(*decls, help=help, rich_help_panel=PANEL_TOOLS, show_default=False, metavar=metavar)


Mcp = Annotated[Optional[List[Path]], _tools_opt(
    "--mcp", metavar="FILE", help='Offer the tools of the MCP servers FILE configures ({"mcpServers": {...}}, Claude '
                                  "Desktop's format; repeatable). The calls run, each with your approval.")]
Functions = Annotated[Optional[List[Path]], _tools_opt(
    "--functions", metavar="FILE.py", help="Offer the typed public functions of FILE.py as tools (repeatable); the "
                                           "docstring is the description.")]
Tool = Annotated[Optional[List[str]], _tools_opt(
    "--tool", "-T", metavar="NAME", help="Offer only this tool, or every tool of this server (repeatable); the servers "
                                         "of mcp.json in the config dir start only when named here or with --all-tools.")]
AllTools = Annotated[bool, _tools_opt("--all-tools", help="Offer every tool: those named on the command line and all "
                                                          "the servers of mcp.json in the config dir.")]
Yes = Annotated[bool, _tools_opt("--yes", "-y", help="Run tool calls without asking (needed in a pipe, where nobody can "
                                                     "be asked).")]
MaxToolSteps = Annotated[Optional[int], _tools_opt(
    "--max-tool-steps", help="Replies with tool calls in one turn before the model must answer [default: 5]")]
