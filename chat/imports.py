"""Conversations from a file: our own JSON (chat.exports), Open WebUI's and ChatGPT's exports.

Parsing is plain Python (no database): `parse(data)` reads the bytes with core.safejson's
limits, recognises the format, checks every field and returns `Parsed` conversations, or
raises `InvalidImport` naming the first thing wrong (`conversations[2].messages[3]: role must
be user or assistant`). `save(owner, parsed)` then writes them all in one transaction: an
import is all or nothing.

What is kept and what is not:
- every branch, with its order of versions, and the branch shown (our `current_leaf`, Open
  WebUI's `currentId`, ChatGPT's `current_node`);
- user and assistant messages only. A system message becomes the conversation's system prompt
  (the first one with text); tool calls and results, hidden nodes (ChatGPT's custom
  instructions, its reasoning notes, the empty root) and messages without text are skipped, and
  what followed them is attached to the nearest message kept;
- ids from the file are never used: conversations get new UUIDs, messages new ids, all owned
  by the importer;
- attachments are kept as records only (name, size, type), never linked to an upload: the
  upload ids in a file may be anyone's. The imported records say `imported: true`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core import safejson
from core.errors import AppError

FORMAT_ONE = "ollama-gateway/conversation"  # as chat.exports writes them
FORMAT_ALL = "ollama-gateway/conversations"
MAX_TITLE = 200
MAX_MODEL = 200
MAX_SYSTEM_PROMPT = 20_000
STATUSES = {"complete", "cancelled", "failed", "interrupted", "streaming"}
# Figure -> (largest value, integral): the columns' types (and non-negative, as they require).
METRIC_LIMITS: dict[str, tuple[float, bool]] = {
    "total_duration": (2**62, True),
    "load_duration": (2**62, True),
    "prompt_eval_count": (2**31 - 1, True),
    "prompt_eval_duration": (2**62, True),
    "eval_count": (2**31 - 1, True),
    "eval_duration": (2**62, True),
    "in_flight_at_start": (2**31 - 1, True),
    "tokens_per_second": (1e15, False),
    "prompt_tokens_per_second": (1e15, False),
    "time_to_first_token": (1e15, False),
    "queue_wait": (1e15, False),
}


class InvalidImport(AppError):
    """400 `invalid_import`: the file, and where in it, is wrong."""

    code = "invalid_import"
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail)


@dataclass
class ParsedMessage:
    key: str  # the file's id, only to link parents and the current branch
    parent: str | None
    role: str
    content: str
    created: datetime | None = None
    completed: datetime | None = None
    model: str = ""
    status: str = "complete"
    options: dict[str, Any] = field(default_factory=dict)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    done_reason: str = ""
    error_code: str = ""
    error: str = ""


@dataclass
class ParsedConversation:
    title: str = ""
    model: str = ""
    system_prompt: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    context_exchanges: int | None = None
    created: datetime | None = None
    updated: datetime | None = None
    messages: list[ParsedMessage] = field(default_factory=list)  # parents before children
    current: str | None = None  # the key of the leaf of the branch shown


@dataclass
class Parsed:
    format: str  # "ollama-gateway", "open-webui" or "chatgpt"
    conversations: list[ParsedConversation]

    @property
    def message_count(self) -> int:
        return sum(len(c.messages) for c in self.conversations)


@dataclass
class Limits:
    max_conversations: int
    max_messages: int
    seen_messages: int = 0

    def count(self, n: int, where: str) -> None:
        """Nodes read so far, skipped ones too: the work a file can ask for is bounded."""
        self.seen_messages += n
        if self.seen_messages > self.max_messages:
            raise InvalidImport(
                f"{where}: the file has more than {self.max_messages} messages "
                "(IMPORT_MAX_MESSAGES); split it"
            )


# --------------------------------------------------------------------------- entry point


def parse(data: bytes, *, max_conversations: int, max_messages: int) -> Parsed:
    try:
        document = safejson.loads(data)
    except safejson.TooDeep as exc:
        raise InvalidImport(f"The file is too deeply nested: {exc}.") from None
    except UnicodeDecodeError:
        raise InvalidImport("The file is not UTF-8 text (not JSON).") from None
    except ValueError as exc:
        raise InvalidImport(f"The file is not JSON: {exc}.") from None
    limits = Limits(max_conversations, max_messages)
    kind, items = detect(document)
    if not items:
        raise InvalidImport("The file has no conversations.")
    if len(items) > max_conversations:
        raise InvalidImport(
            f"The file has {len(items)} conversations; at most {max_conversations} can be "
            "imported at once (IMPORT_MAX_CONVERSATIONS)."
        )
    reader = READERS[kind]
    prefix = "conversations" if kind != "ollama-gateway-one" else "conversation"
    conversations = []
    for index, item in enumerate(items):
        where = f"{prefix}[{index}]" if prefix == "conversations" else prefix
        conversations.append(reader(item, where, limits))
    return Parsed(kind.removesuffix("-one").removesuffix("-all"), conversations)


def detect(document: Any) -> tuple[str, list[Any]]:
    """The format and the conversations of a document, or InvalidImport."""
    if isinstance(document, dict):
        marker = document.get("format")
        if marker == FORMAT_ONE:
            _check_version(document)
            return "ollama-gateway-one", [document.get("conversation")]
        if marker == FORMAT_ALL:
            _check_version(document)
            items = document.get("conversations")
            if not isinstance(items, list):
                raise InvalidImport("conversations: must be a list")
            return "ollama-gateway-all", items
        if marker is not None:
            raise InvalidImport(f"Unknown format {str(marker)[:80]!r}.")
        if "mapping" in document:
            return "chatgpt", [document]
        if isinstance(document.get("chat"), dict):
            return "open-webui", [document]
    if isinstance(document, list):
        if not document:
            return "chatgpt", []
        first = document[0]
        if isinstance(first, dict) and "mapping" in first:
            return "chatgpt", document
        if isinstance(first, dict) and isinstance(first.get("chat"), dict):
            return "open-webui", document
    raise InvalidImport(
        "Unknown format: expected this server's JSON export, Open WebUI's chat export or "
        "ChatGPT's conversations.json."
    )


def _check_version(document: dict[str, Any]) -> None:
    if document.get("version") != 1:
        raise InvalidImport(f"version: {str(document.get('version'))[:20]} is not supported (1)")


# --------------------------------------------------------------------------- helpers


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidImport(f"{where}: must be an object")
    return value


def _text(value: Any, where: str, *, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidImport(f"{where}: must be text")
    return value


def _short(value: Any, where: str, limit: int) -> str:
    return _text(value, where)[:limit]


def _epoch(value: Any, where: str) -> datetime | None:
    """Seconds since 1970 (milliseconds when it is that large), or null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidImport(f"{where}: must be a time in seconds since 1970")
    seconds = value / 1000 if value > 1e11 else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidImport(f"{where}: is not a valid time") from None


def _iso(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidImport(f"{where}: must be an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidImport(f"{where}: is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _options(value: Any, where: str) -> dict[str, Any]:
    from chat.options import InvalidOptions, validate_options

    if value is None:
        return {}
    try:
        return validate_options(value)
    except InvalidOptions as exc:
        raise InvalidImport(f"{where}: {exc.errors}") from None


def _attachments(value: Any, where: str) -> list[dict[str, Any]]:
    """Records only, never linked to an upload (the ids in a file may be anyone's)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidImport(f"{where}: must be a list")
    records = []
    for index, item in enumerate(value[:20]):
        item = _object(item, f"{where}[{index}]")
        size = item.get("size")
        records.append(
            {
                "name": _short(item.get("name"), f"{where}[{index}].name", 255) or "file",
                "content_type": _short(item.get("content_type"), f"{where}[{index}].type", 100),
                "size": size if isinstance(size, int) and not isinstance(size, bool) else None,
                "kind": _short(item.get("kind"), f"{where}[{index}].kind", 20),
                "imported": True,
            }
        )
    return records


def _metrics(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    value = _object(value, where)
    metrics: dict[str, Any] = {}
    for name, (largest, integral) in METRIC_LIMITS.items():
        number = value.get(name)
        if number is None:
            continue
        ok = isinstance(number, int | float) and not isinstance(number, bool)
        if ok and integral and not isinstance(number, int):
            ok = False
        if not ok or not math.isfinite(number) or not 0 <= number <= largest:
            raise InvalidImport(f"{where}.{name}: must be a non-negative number")
        metrics[name] = number
    return metrics


@dataclass
class _Node:
    key: str
    parent: str | None
    message: ParsedMessage | None  # None: skipped (system, tool, hidden, empty)
    order: tuple[float, float]  # siblings' order (a rank, then time or place in the file)


def build_tree(
    nodes: Sequence[_Node], current: str | None, where: str, *, strict: bool
) -> tuple[list[ParsedMessage], str | None]:
    """The kept messages, parents first, each re-parented past skipped nodes, and the key of
    the branch shown. `strict` (our own files): a parent that is not in the file is an error;
    in the others it makes its child a first message. A cycle is always an error."""
    by_key: dict[str, _Node] = {}
    for node in nodes:
        if node.key in by_key:
            raise InvalidImport(f"{where}: the id {node.key[:80]!r} is used twice")
        by_key[node.key] = node
    if strict:
        for node in nodes:
            if node.parent is not None and node.parent not in by_key:
                raise InvalidImport(
                    f"{where}: message {node.key[:80]!r} has a parent that is not in the file"
                )

    kept_parent: dict[str, str | None] = {}  # node -> its nearest kept ancestor

    def resolve(start: str) -> None:
        path: list[str] = []
        on_path: set[str] = set()
        key: str | None = start
        while key is not None and key in by_key and key not in kept_parent:
            if key in on_path:
                raise InvalidImport(f"{where}: the messages' parents form a cycle")
            on_path.add(key)
            path.append(key)
            key = by_key[key].parent
        # `key` is resolved (or a root's missing parent): unwind the path, nearest first.
        above: str | None
        if key is None or key not in by_key:
            above = None
        else:
            above = key if by_key[key].message is not None else kept_parent[key]
        for node_key in reversed(path):
            kept_parent[node_key] = above
            if by_key[node_key].message is not None:
                above = node_key

    for node in nodes:
        resolve(node.key)

    children: dict[str | None, list[_Node]] = {}
    for node in nodes:
        if node.message is None:
            continue
        node.message.key = node.key
        parent = node.parent
        above = None
        if parent is not None and parent in by_key:
            above = parent if by_key[parent].message is not None else kept_parent[parent]
        node.message.parent = above
        children.setdefault(above, []).append(node)
    for group in children.values():
        group.sort(key=lambda n: n.order)

    ordered: list[ParsedMessage] = []
    stack = list(reversed(children.get(None, [])))
    while stack:  # preorder: a parent always before its children
        node = stack.pop()
        assert node.message is not None
        ordered.append(node.message)
        stack.extend(reversed(children.get(node.key, [])))

    leaf: str | None = None
    if current is not None and current in by_key:
        leaf = current if by_key[current].message is not None else kept_parent[current]
    if leaf is None and ordered:
        # The newest branch: from the newest first message, always the newest version.
        key = children[None][-1].key
        while children.get(key):
            key = children[key][-1].key
        leaf = key
    return ordered, leaf


# --------------------------------------------------------------------------- our format


def read_ours(item: Any, where: str, limits: Limits) -> ParsedConversation:
    item = _object(item, where)
    raw_messages = item.get("messages")
    if not isinstance(raw_messages, list):
        raise InvalidImport(f"{where}.messages: must be a list")
    limits.count(len(raw_messages), where)
    context = item.get("context_exchanges")
    if context is not None and (
        not isinstance(context, int) or isinstance(context, bool) or not 0 <= context <= 100
    ):
        raise InvalidImport(f"{where}.context_exchanges: must be a whole number from 0 to 100")
    system = _text(item.get("system_prompt"), f"{where}.system_prompt")
    if len(system) > MAX_SYSTEM_PROMPT:
        raise InvalidImport(f"{where}.system_prompt: longer than {MAX_SYSTEM_PROMPT} characters")
    nodes = []
    for index, raw in enumerate(raw_messages):
        at = f"{where}.messages[{index}]"
        raw = _object(raw, at)
        key, parent = raw.get("id"), raw.get("parent")
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise InvalidImport(f"{at}.id: must be a number or text")
        if parent is not None and (isinstance(parent, bool) or not isinstance(parent, int | str)):
            raise InvalidImport(f"{at}.parent: must be a message id or null")
        role = raw.get("role")
        if role not in ("user", "assistant"):
            raise InvalidImport(f"{at}.role: must be user or assistant")
        status = raw.get("status", "complete")
        if status not in STATUSES:
            raise InvalidImport(f"{at}.status: must be one of {', '.join(sorted(STATUSES))}")
        if role == "user":
            status = "complete"
        elif status == "streaming":
            status = "interrupted"  # nothing here is generating it
        error_code = _short(raw.get("error_code"), f"{at}.error_code", 40)
        if status == "failed" and not error_code:
            error_code = "unknown"
        metrics = _metrics(raw.get("metrics"), f"{at}.metrics") if role == "assistant" else {}
        raw_metrics = raw.get("metrics")
        done_reason = ""
        if role == "assistant" and isinstance(raw_metrics, dict):
            done_reason = _short(raw_metrics.get("done_reason"), f"{at}.metrics.done_reason", 20)
        options = raw.get("options") or {}
        if not isinstance(options, dict):
            raise InvalidImport(f"{at}.options: must be an object")
        message = ParsedMessage(
            key=str(key),
            parent=None,
            role=role,
            content=_text(raw.get("content"), f"{at}.content"),
            created=_iso(raw.get("created_at"), f"{at}.created_at"),
            completed=_iso(raw.get("completed_at"), f"{at}.completed_at"),
            model=_short(raw.get("model"), f"{at}.model", MAX_MODEL),
            status=status,
            options=options,
            attachments=_attachments(raw.get("attachments"), f"{at}.attachments"),
            metrics=metrics,
            done_reason=done_reason,
            error_code=error_code,
            error=_text(raw.get("error"), f"{at}.error"),
        )
        parent_key = None if parent is None else str(parent)
        nodes.append(_Node(str(key), parent_key, message, (0.0, index)))
    current = item.get("current_leaf")
    messages, leaf = build_tree(
        nodes, None if current is None else str(current), where, strict=True
    )
    return ParsedConversation(
        title=_short(item.get("title"), f"{where}.title", MAX_TITLE),
        model=_short(item.get("model"), f"{where}.model", MAX_MODEL),
        system_prompt=system,
        options=_options(item.get("options"), f"{where}.options"),
        context_exchanges=context,
        created=_iso(item.get("created_at"), f"{where}.created_at"),
        updated=_iso(item.get("updated_at"), f"{where}.updated_at"),
        messages=messages,
        current=leaf,
    )


# --------------------------------------------------------------------------- Open WebUI


def read_open_webui(item: Any, where: str, limits: Limits) -> ParsedConversation:
    """One chat of Open WebUI's export: `{title, chat: {models, params: {system}, history:
    {messages: {id: {id, parentId, childrenIds, role, content, timestamp, model}}, currentId},
    messages: [...]}, created_at, updated_at}` (times in seconds)."""
    item = _object(item, where)
    chat = _object(item.get("chat"), f"{where}.chat")
    history = chat.get("history")
    system_prompt = ""
    params = chat.get("params")
    if isinstance(params, dict) and isinstance(params.get("system"), str):
        system_prompt = params["system"]
    elif isinstance(chat.get("system"), str):
        system_prompt = chat["system"]
    nodes: list[_Node] = []
    current: str | None = None
    if isinstance(history, dict) and isinstance(history.get("messages"), dict):
        raw_messages: Mapping[str, Any] = history["messages"]
        limits.count(len(raw_messages), where)
        current_id = history.get("currentId")
        current = current_id if isinstance(current_id, str) else None
        # Siblings in the order of their parent's childrenIds, else by time.
        rank: dict[str, int] = {}
        for raw in raw_messages.values():
            if isinstance(raw, dict) and isinstance(raw.get("childrenIds"), list):
                for position, child in enumerate(raw["childrenIds"]):
                    if isinstance(child, str):
                        rank.setdefault(child, position)
        for index, (key, raw) in enumerate(raw_messages.items()):
            at = f"{where}.chat.history.messages[{str(key)[:80]!r}]"
            raw = _object(raw, at)
            parent = raw.get("parentId")
            if parent is not None and not isinstance(parent, str):
                raise InvalidImport(f"{at}.parentId: must be a message id or null")
            message, system = _open_webui_message(raw, at)
            if system and not system_prompt:
                system_prompt = system
            time = message.created.timestamp() if message and message.created else 0.0
            nodes.append(_Node(str(key), parent, message, (rank.get(str(key), index), time)))
    elif isinstance(chat.get("messages"), list):
        # Older exports: the shown branch only, as a list.
        limits.count(len(chat["messages"]), where)
        previous: str | None = None
        for index, raw in enumerate(chat["messages"]):
            at = f"{where}.chat.messages[{index}]"
            message, system = _open_webui_message(_object(raw, at), at)
            if system and not system_prompt:
                system_prompt = system
            nodes.append(_Node(str(index), previous, message, (0.0, index)))
            previous = str(index)
    else:
        raise InvalidImport(f"{where}.chat.history.messages: must be an object of messages")
    messages, leaf = build_tree(nodes, current, where, strict=False)
    models = chat.get("models")
    model = models[0] if isinstance(models, list) and models and isinstance(models[0], str) else ""
    return ParsedConversation(
        title=_short(item.get("title") or chat.get("title"), f"{where}.title", MAX_TITLE),
        model=model[:MAX_MODEL],
        system_prompt=system_prompt[:MAX_SYSTEM_PROMPT],
        created=_epoch(item.get("created_at"), f"{where}.created_at"),
        updated=_epoch(item.get("updated_at"), f"{where}.updated_at"),
        messages=messages,
        current=leaf,
    )


def _open_webui_message(raw: dict[str, Any], at: str) -> tuple[ParsedMessage | None, str]:
    """A message, or None and the text of a system message (skipped: becomes the prompt)."""
    role = raw.get("role")
    content = raw.get("content")
    if isinstance(content, list):  # OpenAI-style parts
        content = "\n".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    content = _text(content, f"{at}.content")
    if role == "system":
        return None, content
    if role not in ("user", "assistant"):
        raise InvalidImport(f"{at}.role: must be user, assistant or system")
    listed = raw.get("files")
    files_raw: list[Any] = listed if isinstance(listed, list) else []
    images = len([f for f in files_raw if isinstance(f, dict) and f.get("type") == "image"])
    if images:  # inline images (data: URLs) are not imported; say where they were
        content = "\n".join(["[image not imported]"] * images + ([content] if content else []))
    failed = role == "assistant" and bool(raw.get("error"))
    if not content.strip() and not files_raw and not failed:
        return None, ""
    model = raw.get("model")
    if not isinstance(model, str):
        models = raw.get("models")
        model = models[0] if isinstance(models, list) and models else ""
    files = []
    for entry in files_raw:
        if isinstance(entry, dict) and entry.get("type") != "image":
            files.append({"name": entry.get("name"), "kind": entry.get("type")})
    return (
        ParsedMessage(
            key=str(raw.get("id", "")),
            parent=None,
            role=role,
            content=content,
            created=_epoch(raw.get("timestamp"), f"{at}.timestamp"),
            model=str(model)[:MAX_MODEL] if role == "assistant" else "",
            status="failed" if failed else "complete",
            error_code="imported_error" if failed else "",
            error=_error_text(raw.get("error")) if failed else "",
            attachments=_attachments(
                [f for f in files if isinstance(f.get("name"), str)], f"{at}.files"
            ),
        ),
        "",
    )


def _error_text(value: Any) -> str:
    """Open WebUI's error of a reply: text, or `{"content": text}`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value[:2000] if isinstance(value, str) else "The reply failed (imported)."


# --------------------------------------------------------------------------- ChatGPT


def read_chatgpt(item: Any, where: str, limits: Limits) -> ParsedConversation:
    """One conversation of ChatGPT's conversations.json: `{title, create_time, update_time,
    mapping: {id: {id, message: {author: {role}, content: {content_type, parts}, create_time,
    metadata}, parent, children}}, current_node}` (times in seconds)."""
    item = _object(item, where)
    mapping = _object(item.get("mapping"), f"{where}.mapping")
    limits.count(len(mapping), where)
    system_prompt = ""
    rank: dict[str, int] = {}
    for raw in mapping.values():
        if isinstance(raw, dict) and isinstance(raw.get("children"), list):
            for position, child in enumerate(raw["children"]):
                if isinstance(child, str):
                    rank.setdefault(child, position)
    nodes: list[_Node] = []
    for index, (key, raw) in enumerate(mapping.items()):
        at = f"{where}.mapping[{str(key)[:80]!r}]"
        raw = _object(raw, at)
        parent = raw.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise InvalidImport(f"{at}.parent: must be a node id or null")
        message, system = _chatgpt_message(raw.get("message"), f"{at}.message")
        if system and not system_prompt:
            system_prompt = system
        time = message.created.timestamp() if message and message.created else 0.0
        nodes.append(_Node(str(key), parent, message, (rank.get(str(key), index), time)))
    current = item.get("current_node")
    messages, leaf = build_tree(
        nodes, current if isinstance(current, str) else None, where, strict=False
    )
    model = item.get("default_model_slug")
    return ParsedConversation(
        title=_short(item.get("title"), f"{where}.title", MAX_TITLE),
        model=model[:MAX_MODEL] if isinstance(model, str) else "",
        system_prompt=system_prompt[:MAX_SYSTEM_PROMPT],
        created=_epoch(item.get("create_time"), f"{where}.create_time"),
        updated=_epoch(item.get("update_time"), f"{where}.update_time"),
        messages=messages,
        current=leaf,
    )


def _chatgpt_message(raw: Any, at: str) -> tuple[ParsedMessage | None, str]:
    if raw is None:
        return None, ""  # the empty root
    raw = _object(raw, at)
    author = _object(raw.get("author"), f"{at}.author")
    role = author.get("role")
    if role not in ("user", "assistant", "system", "tool"):
        raise InvalidImport(f"{at}.author.role: must be user, assistant, system or tool")
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    content = raw.get("content")
    text = _chatgpt_text(_object(content, f"{at}.content"), f"{at}.content") if content else ""
    if metadata.get("is_visually_hidden_from_conversation") or role == "tool":
        return None, ""
    if role == "system":
        return None, text
    if not text.strip():
        return None, ""
    model = metadata.get("model_slug") if role == "assistant" else ""
    status = raw.get("status")
    return (
        ParsedMessage(
            key=str(raw.get("id", "")),
            parent=None,
            role=role,
            content=text,
            created=_epoch(raw.get("create_time"), f"{at}.create_time"),
            model=model[:MAX_MODEL] if isinstance(model, str) else "",
            status="interrupted" if role == "assistant" and status == "in_progress" else "complete",
        ),
        "",
    )


def _chatgpt_text(content: dict[str, Any], at: str) -> str:
    """The text of a node's content; what is not text (images, reasoning, tool output) is
    left out or named."""
    kind = content.get("content_type")
    if kind in ("text", "multimodal_text"):
        parts = content.get("parts")
        if not isinstance(parts, list):
            raise InvalidImport(f"{at}.parts: must be a list")
        texts = []
        for part in parts:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and "image" in str(part.get("content_type", "")):
                texts.append("[image not imported]")
        return "\n".join(t for t in texts if t)
    if kind == "code":
        text = _text(content.get("text"), f"{at}.text")
        return f"```{content.get('language') or ''}\n{text}\n```" if text else ""
    return ""  # thoughts, reasoning_recap, execution_output, user_editable_context, ...


READERS: dict[str, Callable[[Any, str, Limits], ParsedConversation]] = {
    "ollama-gateway-one": read_ours,
    "ollama-gateway-all": read_ours,
    "open-webui": read_open_webui,
    "chatgpt": read_chatgpt,
}


# --------------------------------------------------------------------------- saving


def save(owner: Any, parsed: Parsed) -> list[Any]:
    """Create the parsed conversations for `owner`, all or none (one transaction).

    Messages are inserted parents first, so their new ids grow down every branch as the
    `chat_msg_parent_before` constraint wants; the links to parents and the file's times
    (which auto_now_add would overwrite) are set after (`_link_and_date`)."""
    from django.db import transaction
    from django.utils import timezone

    from chat.models import Conversation, Message

    now = timezone.now()
    created: list[Conversation] = []
    with transaction.atomic():
        for item in parsed.conversations:
            conversation = Conversation.objects.create(
                owner=owner,
                title=item.title,
                model=item.model,
                system_prompt=item.system_prompt,
                options=item.options,
                context_exchanges=item.context_exchanges,
                source=Conversation.Source.CHAT,
            )
            rows = [
                Message(
                    conversation=conversation,
                    role=m.role,
                    content=m.content,
                    status=m.status,
                    model=m.model,
                    options=m.options,
                    attachments=m.attachments,
                    done_reason=m.done_reason,
                    error_code=m.error_code,
                    error=m.error,
                    completed_at=m.completed,
                    **m.metrics,
                )
                for m in item.messages
            ]
            Message.objects.bulk_create(rows, batch_size=500)
            ids = {m.key: row.pk for m, row in zip(item.messages, rows, strict=True)}
            for m, row in zip(item.messages, rows, strict=True):
                row.parent_id = ids[m.parent] if m.parent is not None else None
                row.created_at = row.updated_at = m.created or item.created or now
            _link_and_date(rows)
            Conversation.objects.filter(pk=conversation.pk).update(
                current_leaf_id=ids.get(item.current) if item.current is not None else None,
                created_at=item.created or now,
                updated_at=item.updated or item.created or now,
            )
            conversation.refresh_from_db()
            created.append(conversation)
    return created


def _link_and_date(rows: Sequence[Any]) -> None:
    """Set the inserted messages' parents and times: one prepared UPDATE run for every row
    (`executemany`), where the ORM's bulk_update would build a CASE per 500 rows and spend
    most of a large import compiling it."""
    from django.db import connection

    ops = connection.ops
    # chat_message is Message's table (a literal: no name comes from outside).
    sql = "UPDATE chat_message SET parent_id = %s, created_at = %s, updated_at = %s WHERE id = %s"
    params = []
    for row in rows:
        when = ops.adapt_datetimefield_value(row.created_at)
        params.append((row.parent_id, when, when, row.pk))
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
