"""The bundled video LLM (vision encoder + HiCo + LLM) and its trainer. Knows nothing of Ray."""
