"""Every attribute name agent-otel writes, and the agent event taxonomy.

This module is the single owner of names: instrumentations import constants from here and never
spell an attribute key as a string literal. GenAI names are re-exported from the OpenTelemetry
semantic-conventions package where it has them; the rest are ours, under ``agent_otel.``.
"""

from __future__ import annotations

from enum import Enum

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv._incubating.attributes import openai_attributes as _openai
from opentelemetry.semconv._incubating.attributes import user_attributes as _user
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import http_attributes as _http
from opentelemetry.semconv.attributes import server_attributes as _server

# --- GenAI semantic conventions (re-exported) ---
GEN_AI_OPERATION_NAME = _gen_ai.GEN_AI_OPERATION_NAME
GEN_AI_PROVIDER_NAME = _gen_ai.GEN_AI_PROVIDER_NAME
GEN_AI_AGENT_NAME = _gen_ai.GEN_AI_AGENT_NAME
GEN_AI_AGENT_ID = _gen_ai.GEN_AI_AGENT_ID
GEN_AI_CONVERSATION_ID = _gen_ai.GEN_AI_CONVERSATION_ID
GEN_AI_WORKFLOW_NAME = _gen_ai.GEN_AI_WORKFLOW_NAME
GEN_AI_REQUEST_MODEL = _gen_ai.GEN_AI_REQUEST_MODEL
GEN_AI_REQUEST_STREAM = _gen_ai.GEN_AI_REQUEST_STREAM
GEN_AI_REQUEST_TEMPERATURE = _gen_ai.GEN_AI_REQUEST_TEMPERATURE
GEN_AI_REQUEST_TOP_P = _gen_ai.GEN_AI_REQUEST_TOP_P
GEN_AI_REQUEST_TOP_K = _gen_ai.GEN_AI_REQUEST_TOP_K
GEN_AI_REQUEST_MAX_TOKENS = _gen_ai.GEN_AI_REQUEST_MAX_TOKENS
GEN_AI_REQUEST_SEED = _gen_ai.GEN_AI_REQUEST_SEED
GEN_AI_REQUEST_STOP_SEQUENCES = _gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES
GEN_AI_REQUEST_FREQUENCY_PENALTY = _gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY
GEN_AI_REQUEST_PRESENCE_PENALTY = _gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY
GEN_AI_REQUEST_CHOICE_COUNT = _gen_ai.GEN_AI_REQUEST_CHOICE_COUNT
GEN_AI_REQUEST_ENCODING_FORMATS = _gen_ai.GEN_AI_REQUEST_ENCODING_FORMATS
GEN_AI_RESPONSE_MODEL = _gen_ai.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_ID = _gen_ai.GEN_AI_RESPONSE_ID
GEN_AI_RESPONSE_FINISH_REASONS = _gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = _gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
GEN_AI_USAGE_INPUT_TOKENS = _gen_ai.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS = _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = _gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = _gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = _gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
GEN_AI_TOKEN_TYPE = _gen_ai.GEN_AI_TOKEN_TYPE
GEN_AI_OUTPUT_TYPE = _gen_ai.GEN_AI_OUTPUT_TYPE
GEN_AI_EMBEDDINGS_DIMENSION_COUNT = _gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT
GEN_AI_TOOL_NAME = _gen_ai.GEN_AI_TOOL_NAME
GEN_AI_TOOL_CALL_ID = _gen_ai.GEN_AI_TOOL_CALL_ID
GEN_AI_TOOL_TYPE = _gen_ai.GEN_AI_TOOL_TYPE
GEN_AI_TOOL_DESCRIPTION = _gen_ai.GEN_AI_TOOL_DESCRIPTION
# Opt-in content (JSON strings on spans; only when content capture is on).
GEN_AI_INPUT_MESSAGES = _gen_ai.GEN_AI_INPUT_MESSAGES
GEN_AI_OUTPUT_MESSAGES = _gen_ai.GEN_AI_OUTPUT_MESSAGES
GEN_AI_SYSTEM_INSTRUCTIONS = _gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS
GEN_AI_TOOL_DEFINITIONS = _gen_ai.GEN_AI_TOOL_DEFINITIONS
GEN_AI_TOOL_CALL_ARGUMENTS = _gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS
GEN_AI_TOOL_CALL_RESULT = _gen_ai.GEN_AI_TOOL_CALL_RESULT

ERROR_TYPE = _error.ERROR_TYPE
SERVER_ADDRESS = _server.SERVER_ADDRESS
SERVER_PORT = _server.SERVER_PORT
USER_ID = _user.USER_ID  # incubating: semconv has no stable user.* yet

# Fallback error.type when nothing better is known (semconv).
ERROR_TYPE_OTHER = _error.ErrorTypeValues.OTHER.value


class Operation(str, Enum):
    """Values of ``gen_ai.operation.name`` that agent-otel emits."""

    INVOKE_AGENT = _gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value
    INVOKE_WORKFLOW = _gen_ai.GenAiOperationNameValues.INVOKE_WORKFLOW.value
    EXECUTE_TOOL = _gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
    CHAT = _gen_ai.GenAiOperationNameValues.CHAT.value
    TEXT_COMPLETION = _gen_ai.GenAiOperationNameValues.TEXT_COMPLETION.value
    GENERATE_CONTENT = _gen_ai.GenAiOperationNameValues.GENERATE_CONTENT.value
    EMBEDDINGS = _gen_ai.GenAiOperationNameValues.EMBEDDINGS.value


class Category(str, Enum):
    """The low-cardinality span category of the agent event taxonomy.

    Stored in :data:`CATEGORY` on every taxonomy span; the event filter and the viewer key on it.
    """

    AGENT = "agent"
    WORKFLOW = "workflow"
    NODE = "node"
    LLM = "llm"
    TOOL = "tool"


ALL_CATEGORIES: frozenset[str] = frozenset(c.value for c in Category)

# --- agent-otel's own keys ---
CATEGORY = "agent_otel.span.category"
# Only on start records in the JSONL file: the span as it started, not yet ended.
START_RECORD = "agent_otel.start_record"
# The span was ended by KeyboardInterrupt, SIGTERM, SystemExit, task cancellation or process exit.
INTERRUPTED = "agent_otel.interrupted"
# The span was rebuilt from a start record (the process died before it ended).
RECOVERED = "agent_otel.recovered"
UNFINISHED_ERROR_TYPE = "agent_otel.unfinished"

NODE_NAME = "agent_otel.node.name"
NODE_STEP = "agent_otel.node.step"
NODE_TRIGGERS = "agent_otel.node.triggers"
NODE_INPUT = "agent_otel.node.input"
NODE_OUTPUT = "agent_otel.node.output"

TOOL_OUTCOME = "agent_otel.tool.outcome"
TOOL_OUTCOME_SUCCESS = "success"
TOOL_OUTCOME_ERROR = "error"
TOOL_OUTCOME_VALIDATION_ERROR = "validation_error"
TOOL_VALIDATION_ERROR_TYPE = "ToolValidationError"
# The model asked for a tool the agent does not have.
TOOL_NOT_FOUND_ERROR_TYPE = "ToolNotFound"

# A LangGraph interrupt()/human-in-the-loop pause (not a failure).
INTERRUPT = "agent_otel.graph.interrupt"

# Names of attributes whose values were truncated to fit the record (string array).
TRUNCATED = "agent_otel.truncated"

# Span names: "{operation} {subject}" as the GenAI conventions name them; "node {name}" is ours.
NODE_SPAN_PREFIX = "node"


def span_name(operation: str, subject: str | None) -> str:
    """Return the conventional span name ``"{operation} {subject}"`` (just the operation if no subject)."""
    return f"{operation} {subject}" if subject else operation


# --- langchain / langgraph ---
# Tool calls a model requested in its answer (names and call ids; arguments only via content capture).
LLM_TOOL_CALL_NAMES = "agent_otel.llm.tool_call.names"
LLM_TOOL_CALL_IDS = "agent_otel.llm.tool_call.ids"
# A graph run that resumes a paused (interrupted) run: LangGraph Command(resume=...).
GRAPH_RESUME = "agent_otel.graph.resume"
# LangGraph's task id of a node execution (matches its checkpoint writes).
NODE_TASK_ID = "agent_otel.node.task_id"

# --- openai / anthropic ---
# (LLM_TOOL_CALL_NAMES / LLM_TOOL_CALL_IDS above are shared with these instrumentations.)
# How many times the SDK re-sent the request of this call (its own retries), and one event per retry.
HTTP_REQUEST_RESEND_COUNT = _http.HTTP_REQUEST_RESEND_COUNT
HTTP_RESPONSE_STATUS_CODE = _http.HTTP_RESPONSE_STATUS_CODE
LLM_RETRY_EVENT = "agent_otel.llm.retry"
LLM_RETRY_ATTEMPT = "agent_otel.llm.retry.attempt"
OPENAI_REQUEST_SERVICE_TIER = _openai.OPENAI_REQUEST_SERVICE_TIER
OPENAI_RESPONSE_SERVICE_TIER = _openai.OPENAI_RESPONSE_SERVICE_TIER
OPENAI_RESPONSE_SYSTEM_FINGERPRINT = _openai.OPENAI_RESPONSE_SYSTEM_FINGERPRINT
# The provider's request id (same key as the anthropic SDK's own spans; not in semconv).
ANTHROPIC_REQUEST_ID = "anthropic.request.id"
