"""One blueprint per area of the admin UI."""

from __future__ import annotations

from gateway.web.views.api_tokens import blueprint as api_tokens
from gateway.web.views.audit import blueprint as audit
from gateway.web.views.auth import blueprint as auth
from gateway.web.views.dashboard import blueprint as dashboard
from gateway.web.views.destinations import blueprint as destinations
from gateway.web.views.dicomweb import blueprint as dicomweb
from gateway.web.views.model_watch import blueprint as model_watch
from gateway.web.views.models import blueprint as models
from gateway.web.views.ops import blueprint as ops
from gateway.web.views.pull import blueprint as pull
from gateway.web.views.rules import blueprint as rules
from gateway.web.views.studies import blueprint as studies
from gateway.web.views.users import blueprint as users

BLUEPRINTS = (
    *(auth, dashboard, studies, audit, rules, destinations, models, users, ops, pull),
    *(api_tokens, dicomweb),  # the DICOMweb server and its clients' tokens: docs/dicomweb.md
    model_watch,  # daily model statistics, shadow runs, promotion: docs/model-watch.md
)
