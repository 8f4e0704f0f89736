"""Chat formats: how each model family writes reasoning blocks, tool calls and tool results, beside its chat template.

Offers ChatFormat and detect_format (recognised from the template's marker strings, or named by --chat-format),
ToolSpec and the call forms (tool_calls), and ReplyParser, which turns a reply's raw text into Reasoning, Text and
ToolCall events as it streams. Pure logic: no model, no llama_cpp.
"""
