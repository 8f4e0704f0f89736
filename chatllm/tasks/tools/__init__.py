"""Tools: definitions (a JSON file, MCP servers, Python functions), the permission to run one, and the tool loop."""
