"""The engine on llama.cpp (the only package that imports llama_cpp), with its device, thread and attention choices."""
