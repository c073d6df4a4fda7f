"""The DICOMweb server as its own WSGI app (mounted at /dicomweb of the web server by
gateway/web/views/dicomweb.py): its own authentication (API tokens, no session or CSRF), its
own body limit (STOW-RS streams; the admin UI's 1 MiB limit does not apply), errors as text,
and one audit event per request, written when the response has been sent."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from sqlalchemy import Engine
from werkzeug.exceptions import HTTPException

from gateway.audit import AuditKind, Outcome, audit_row, record
from gateway.dicom.dataset_limits import MB, DatasetLimits
from gateway.dicom.spool import Spool
from gateway.dicom.store_instance import InstanceStore
from gateway.dicomweb import rendered, stow, wado
from gateway.dicomweb.accept import NotAcceptable, accepted, multipart_choices
from gateway.dicomweb.auth import Challenge, Forbidden, Unauthenticated, authenticate
from gateway.dicomweb.dicom_json import to_native_xml
from gateway.dicomweb.frames import NoSuchFrame, bulk_parts, frame_parts, parse_frame_list
from gateway.dicomweb.holdings import HeldInstance, Holdings
from gateway.dicomweb.multipart import MultipartError, closing, part_header
from gateway.dicomweb.qido import Qido
from gateway.dicomweb.qido_query import Level, QueryError, parse_query
from gateway.dicomweb.tokens import touch
from gateway.ingest import Sender
from gateway.patient_index import PatientIndex
from gateway.settings import GatewaySettings

LOGGER = logging.getLogger(__name__)
EXTENSION = "pacs_gateway_dicomweb"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

routes = Blueprint("dicomweb", __name__)


@dataclass
class DicomWebContext:
    settings: GatewaySettings
    engine: Engine
    store: InstanceStore
    spool: Spool
    holdings: Holdings
    patient_index: PatientIndex
    staging_root: Path


@dataclass
class RequestAudit:
    """What the request's audit event says; the views fill it in."""

    study_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def context() -> DicomWebContext:
    value: DicomWebContext = current_app.extensions[EXTENSION]
    return value


def create_dicomweb_app(settings: GatewaySettings, engine: Engine) -> Flask:
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=None, TEMPLATES_AUTO_RELOAD=False)
    spool = Spool(
        settings.spool_dir,
        min_free_bytes=settings.storage.min_free_mb * MB,
        fsync=settings.storage.fsync,
    )
    index = PatientIndex.from_settings(settings)
    staging_root = settings.data_dir / "stow-incoming"
    stow.clear_stale_staging(staging_root)
    app.extensions[EXTENSION] = DicomWebContext(
        settings=settings,
        engine=engine,
        store=InstanceStore(
            engine, spool, DatasetLimits.from_settings(settings.dicom), patient_index=index
        ),
        spool=spool,
        holdings=Holdings(settings.spool_dir, settings.results_dir, engine),
        patient_index=index,
        staging_root=staging_root,
    )
    app.register_blueprint(routes)
    app.before_request(_authenticate)
    app.after_request(_finish)
    app.register_error_handler(HTTPException, _http_error)
    return app


# Authentication, errors, audit --------------------------------------------------------
def _text(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    response = Response(message + "\n", status=status, mimetype="text/plain")
    for name, value in headers or []:
        response.headers.add(name, value)
    g.setdefault("audit", RequestAudit()).detail.setdefault("error", message[:300])
    return response


def _authenticate() -> Response | None:
    g.audit = RequestAudit()
    ctx = context()
    try:
        g.client = authenticate(
            request, ctx.engine, allow_basic=ctx.settings.dicomweb.allow_basic_auth
        )
    except Unauthenticated as exc:
        challenge = Challenge(basic=ctx.settings.dicomweb.allow_basic_auth)
        return _text(401, str(exc), challenge.headers())
    except Forbidden as exc:
        return _text(403, str(exc))
    try:
        touch(
            ctx.engine,
            g.client,
            request.remote_addr,
            ctx.settings.dicomweb.token_touch_interval_s,
        )
    except Exception as exc:  # the last-used time must not fail the request
        LOGGER.error("API token last-used update failed: %s", type(exc).__name__)
    return None


def _http_error(exc: HTTPException) -> Response:
    return _text(exc.code or 500, exc.description or exc.name)


def _finish(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    client = g.get("client")
    audit: RequestAudit = g.get("audit") or RequestAudit()
    ctx = context()
    row: dict[str, Any] = {
        "actor": None if client is None else client.client_name,
        "source_address": (request.remote_addr or "unknown")[:64],
        "study_instance_uid": audit.study_instance_uid,
        "sop_instance_uid": audit.sop_instance_uid,
    }
    detail = audit.detail  # the same dict: a streamed retrieve adds its counts as it goes
    detail.update(
        {
            "method": request.method,
            "route": request.url_rule.rule if request.url_rule else request.path[:200],
            "status": response.status_code,
        }
    )
    engine = ctx.engine

    def write() -> None:  # for a streamed retrieve, after the body went out: counts known
        outcome = Outcome.SUCCESS if response.status_code < 400 else Outcome.FAILURE
        if detail.get("failed"):
            outcome = Outcome.FAILURE
        try:
            with engine.begin() as connection:
                record(
                    connection, audit_row(AuditKind.DICOMWEB_REQUEST, outcome, **row, detail=detail)
                )
        except Exception as exc:
            LOGGER.error("DICOMweb audit write failed: %s", type(exc).__name__)

    if response.is_streamed:
        response.call_on_close(write)
    else:
        # Written now: werkzeug skips call_on_close when the client resets the connection
        # while it drains an unread request body (a refused 2 GB STOW, say).
        write()
    return response


def _check_uid(*values: str | None) -> None:
    for value in values:
        if value is not None and (len(value) > 64 or not _UID.match(value)):
            raise _BadRequest(f"expected a UID in the path, found {value[:70]!r}")


class _BadRequest(HTTPException):
    code = 400


def base_url() -> str:
    configured = context().settings.dicomweb.public_url
    return configured or request.host_url.rstrip("/") + request.script_root


def _audit_uids(study: str | None, sop: str | None = None, **detail: Any) -> RequestAudit:
    audit: RequestAudit = g.audit
    audit.study_instance_uid = study
    audit.sop_instance_uid = sop
    audit.detail.update(detail)
    return audit


# STOW-RS -----------------------------------------------------------------------------
@routes.post("/studies")
@routes.post("/studies/<study>")
def store_instances(study: str | None = None) -> Response:
    _check_uid(study)
    ctx = context()
    audit = _audit_uids(study)
    limit = ctx.settings.dicomweb.max_stow_mb * MB
    close = [("Connection", "close")]
    if request.content_length is not None and request.content_length > limit:
        return _text(
            413,
            f"expected a STOW-RS body of at most {ctx.settings.dicomweb.max_stow_mb} MB "
            f"(dicomweb.max_stow_mb), found Content-Length {request.content_length}",
            close,
        )
    try:
        boundary = stow.check_content_type(request.headers.get("Content-Type"))
    except stow.UnsupportedMediaType as exc:
        return _text(415, str(exc), close)
    except MultipartError as exc:
        return _text(400, str(exc), close)
    reader = stow.CountingReader(request.stream, limit)
    client = g.client
    sender = Sender(ae_title=client.client_name, address=(request.remote_addr or "")[:64])
    job = stow.StowRequest(
        ctx.store,
        ctx.spool,
        ctx.staging_root,
        max_part_bytes=ctx.settings.dicom.max_dataset_mb * MB,
    )
    try:
        results = job.run(reader.read, boundary, sender, study)
    except stow.BodyTooLarge as exc:
        audit.detail["bytes"] = reader.count
        return _text(413, str(exc), close)
    except MultipartError as exc:
        audit.detail["bytes"] = reader.count
        return _text(400, str(exc), close)
    if not results:
        return _text(400, "expected at least one part in the STOW-RS body, found none")
    status, dataset = stow.response(results, base_url(), study)
    stored = [r for r in results if r.outcome.stored]
    audit.detail.update(
        {
            "bytes": reader.count,
            "stored": len(stored),
            "failed": len(results) - len(stored),
            "reasons": sorted(
                {f"0x{r.outcome.status:04X}" for r in results if not r.outcome.stored}
            ),
        }
    )
    if audit.study_instance_uid is None and len({r.study_instance_uid for r in stored}) == 1:
        audit.study_instance_uid = stored[0].study_instance_uid
    if len(results) == 1:
        audit.sop_instance_uid = results[0].sop_instance_uid
    if _wants_xml():
        return Response(to_native_xml(dataset), status=status, content_type=DICOM_XML)
    response = jsonify(dataset)
    response.status_code = status
    response.content_type = DICOM_JSON
    return response


def _wants_xml() -> bool:
    types = [entry.type for entry in accepted(request.headers.get("Accept"))]
    for media_type in types:
        if media_type in (DICOM_XML, "application/xml", "text/xml"):
            return True
        if media_type in (DICOM_JSON, "application/json", "*/*"):
            return False
    return False


# QIDO-RS -----------------------------------------------------------------------------
def _search(level: Level, study: str | None = None, series: str | None = None) -> Response:
    _check_uid(study, series)
    ctx = context()
    audit = _audit_uids(study, level=level.value)
    try:
        query = parse_query(
            request.args,
            level,
            ctx.patient_index,
            ctx.settings.dicomweb.max_results,
            study_uid=study,
            series_uid=series,
        )
    except QueryError as exc:
        return _text(400, str(exc))
    result = Qido(ctx.holdings, base_url()).search(query)
    audit.detail["matches"] = len(result.matches)
    response = jsonify(result.matches)
    response.content_type = DICOM_JSON
    warnings = list(result.warnings)
    if result.more:
        warnings.append("There are additional results that can be requested")
    for warning in warnings:
        response.headers.add("Warning", f'299 pacs-gateway: "{warning}"')
    return response


@routes.get("/studies")
def search_studies() -> Response:
    return _search(Level.STUDY)


@routes.get("/series")
def search_series() -> Response:
    return _search(Level.SERIES)


@routes.get("/instances")
def search_instances() -> Response:
    return _search(Level.INSTANCE)


@routes.get("/studies/<study>/series")
def search_study_series(study: str) -> Response:
    return _search(Level.SERIES, study)


@routes.get("/studies/<study>/instances")
def search_study_instances(study: str) -> Response:
    return _search(Level.INSTANCE, study)


@routes.get("/studies/<study>/series/<series>/instances")
def search_series_instances(study: str, series: str) -> Response:
    return _search(Level.INSTANCE, study, series)


# WADO-RS -----------------------------------------------------------------------------
def _held(study: str, series: str | None = None, sop: str | None = None) -> list[HeldInstance]:
    _check_uid(study, series, sop)
    instances = context().holdings.instances(study, series, sop)
    if not instances:
        what = "instance" if sop else "series" if series else "study"
        raise _NotFound(f"expected a {what} the gateway holds, found none")
    return instances


class _NotFound(HTTPException):
    code = 404


def _retrieve(study: str, series: str | None = None, sop: str | None = None) -> Response:
    audit = _audit_uids(study, sop)
    instances = _held(study, series, sop)
    try:
        choices = multipart_choices(request.headers.get("Accept"), ("application/dicom",))
        plan = wado.plan_retrieve(instances, choices)
    except NotAcceptable as exc:
        return _text(406, str(exc))
    boundary = wado.new_boundary()
    counter = audit.detail

    def stream() -> Iterator[bytes]:
        yield from wado.retrieve_stream(instances, plan, boundary, counter)

    return Response(
        stream(),
        status=200,
        content_type=wado.multipart_type("application/dicom", boundary),
    )


@routes.get("/studies/<study>")
def retrieve_study(study: str) -> Response:
    return _retrieve(study)


@routes.get("/studies/<study>/series/<series>")
def retrieve_series(study: str, series: str) -> Response:
    return _retrieve(study, series)


@routes.get("/studies/<study>/series/<series>/instances/<sop>")
def retrieve_instance(study: str, series: str, sop: str) -> Response:
    return _retrieve(study, series, sop)


def _metadata(study: str, series: str | None = None, sop: str | None = None) -> Response:
    audit = _audit_uids(study, sop)
    instances = _held(study, series, sop)
    base = base_url()
    answers = []
    for instance in instances:
        try:
            answers.append(wado.metadata_json(instance, base))
        except (OSError, ValueError, EOFError) as exc:  # a file gone since the listing
            LOGGER.warning(  # the type only: pydicom quotes the value it could not read
                "metadata of %s unreadable: %s", instance.sop_instance_uid, type(exc).__name__
            )
    audit.detail["instances"] = len(answers)
    response = jsonify(answers)
    response.content_type = DICOM_JSON
    return response


@routes.get("/studies/<study>/metadata")
def study_metadata(study: str) -> Response:
    return _metadata(study)


@routes.get("/studies/<study>/series/<series>/metadata")
def series_metadata(study: str, series: str) -> Response:
    return _metadata(study, series)


@routes.get("/studies/<study>/series/<series>/instances/<sop>/metadata")
def instance_metadata(study: str, series: str, sop: str) -> Response:
    return _metadata(study, series, sop)


def _parts(parts: list[Any], part_type: str) -> Response:
    boundary = wado.new_boundary()
    body = b"".join(
        part_header(boundary, part.content_type) + part.data + b"\r\n" for part in parts
    ) + closing(boundary)
    g.audit.detail["bytes"] = sum(len(part.data) for part in parts)
    return Response(body, status=200, content_type=wado.multipart_type(part_type, boundary))


def _binary(
    study: str, series: str, sop: str, produce: Callable[[HeldInstance, list[Any]], list[Any]]
) -> Response:
    _audit_uids(study, sop)
    instance = _held(study, series, sop)[0]
    try:
        choices = multipart_choices(
            request.headers.get("Accept"), ("application/octet-stream", "*/*")
        )
        parts = produce(instance, choices)
    except NotAcceptable as exc:
        return _text(406, str(exc))
    except NoSuchFrame as exc:
        return _text(404, str(exc))
    return _parts(parts, "application/octet-stream")


@routes.get("/studies/<study>/series/<series>/instances/<sop>/frames/<frames>")
def retrieve_frames(study: str, series: str, sop: str, frames: str) -> Response:
    g.audit.detail["frames"] = frames[:100]

    def produce(instance: HeldInstance, choices: list[Any]) -> list[Any]:
        return frame_parts(instance.path, parse_frame_list(frames), choices)

    return _binary(study, series, sop, produce)


@routes.get("/studies/<study>/series/<series>/instances/<sop>/bulk/<tag>")
def retrieve_bulk(study: str, series: str, sop: str, tag: str) -> Response:
    g.audit.detail["tag"] = tag[:16]

    def produce(instance: HeldInstance, choices: list[Any]) -> list[Any]:
        return bulk_parts(instance.path, tag, choices)

    return _binary(study, series, sop, produce)


def _rendered(study: str, series: str, sop: str, frame: int, *, thumbnail: bool) -> Response:
    _audit_uids(study, sop, frame=frame)
    instance = _held(study, series, sop)[0]
    media_type = _rendered_type()
    if media_type is None:
        return _text(406, "expected an Accept of image/jpeg or image/png, found neither")
    try:
        window = request.args.get("window")
        viewport = request.args.get("viewport")
        size = (128, 128) if thumbnail else None
        if viewport:
            width, _, height = viewport.partition(",")
            size = (int(width), int(height or width))
        image = rendered.render(
            instance.path,
            frame,
            media_type,
            window=rendered.Window.parse(window) if window else None,
            quality=int(request.args.get("quality", "90")),
            viewport=size,
        )
    except ValueError:
        return _text(400, "expected integers for quality and viewport (width,height)")
    except rendered.CannotRender as exc:
        return _text(406, str(exc))
    g.audit.detail["bytes"] = len(image)
    return Response(image, status=200, content_type=media_type)


def _rendered_type() -> str | None:
    entries = accepted(request.headers.get("Accept"))
    if not entries:
        return "image/jpeg"
    for entry in entries:
        if entry.type in rendered.RENDERED_TYPES:
            return entry.type
        if entry.type in ("*/*", "image/*"):
            return "image/jpeg"
    return None


@routes.get("/studies/<study>/series/<series>/instances/<sop>/rendered")
def rendered_instance(study: str, series: str, sop: str) -> Response:
    return _rendered(study, series, sop, 1, thumbnail=False)


@routes.get("/studies/<study>/series/<series>/instances/<sop>/frames/<int:frame>/rendered")
def rendered_frame(study: str, series: str, sop: str, frame: int) -> Response:
    return _rendered(study, series, sop, frame, thumbnail=False)


@routes.get("/studies/<study>/series/<series>/instances/<sop>/thumbnail")
def thumbnail_instance(study: str, series: str, sop: str) -> Response:
    return _rendered(study, series, sop, 1, thumbnail=True)
