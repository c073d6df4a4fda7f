"""Mounts the DICOMweb server (gateway/dicomweb/app.py) at /dicomweb of the admin web
server. It is a WSGI app of its own, in front of the admin UI's: its requests never meet the
UI's session sign-in, CSRF check or 1 MiB body limit, and use API tokens instead. With
`dicomweb.enabled` off nothing is mounted (404)."""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Flask
from flask.blueprints import BlueprintSetupState
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from gateway.dicomweb.app import create_dicomweb_app
from gateway.web.context import EXTENSION, WebContext

MOUNT = "/dicomweb"

blueprint = Blueprint("dicomweb_mount", __name__)


@blueprint.record_once
def _mount(state: BlueprintSetupState) -> None:
    app = cast(Flask, state.app)
    context: WebContext = app.extensions[EXTENSION]
    if not context.settings.dicomweb.enabled:
        return
    dicomweb = create_dicomweb_app(context.settings, context.engine)
    app.extensions["pacs_gateway_dicomweb_app"] = dicomweb
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {MOUNT: dicomweb})  # type: ignore[method-assign]
