"""docs/conformance.md cannot drift from the code: its tables are compared, both ways, with
what the code does.

- SCP: a real listener is offered every SOP class pydicom and pynetdicom know, with every
  transfer syntax, over real associations; what it accepts is the set of SOP classes. The
  transfer syntaxes accepted for each are what pynetdicom's acceptor negotiation makes of
  the running server's own presentation contexts (checked against the network for one).
- SCU C-STORE: the SOP class and transfer syntax of every result form the gateway builds
  (a CT phantom with every form, and a radiograph), since the sender proposes exactly the
  pair in each file it sends.
- SCU query/retrieve and verification: the pynetdicom SOP classes the pull and destination
  check modules use.
- DICOMweb: the routes of the DICOMweb app.

A failure names the rows to add or remove, in the doc's own format."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import UID, AllTransferSyntaxes, UID_dictionary
from pynetdicom import AE
from pynetdicom import sop_class as pynetdicom_sop_class
from pynetdicom.presentation import build_context, negotiate_as_acceptor
from sqlalchemy import Engine

from gateway import migrate
from gateway.database import make_engine
from gateway.dicom.listener import Listener, start_listener
from gateway.results.build import build_results, encode
from gateway.results.config import ResultsSettings
from gateway.results.forms import ResultForm
from gateway.results.source import read_source_series
from gateway.settings import GatewaySettings
from tests.conftest import REPO, make_settings

DOC = REPO / "docs" / "conformance.md"
MAX_CONTEXTS = 128
SCU_PACKAGES = ("gateway.pull", "gateway.web.destination_check", "gateway.delivery")

Table = list[dict[str, str]]


def doc_tables() -> dict[str, Table]:
    """Each table that follows a `<!-- table: NAME -->` line, rows as {header: cell}."""
    tables: dict[str, Table] = {}
    lines = DOC.read_text().splitlines()
    for index, line in enumerate(lines):
        marker = re.fullmatch(r"<!-- table: ([\w-]+) -->", line.strip())
        if not marker:
            continue
        rows = []
        for row in lines[index + 1 :]:
            if not row.startswith("|"):
                break
            rows.append([cell.strip().strip("`") for cell in row.strip().strip("|").split("|")])
        header, body = rows[0], rows[2:]
        tables[marker.group(1)] = [dict(zip(header, cells, strict=True)) for cells in body]
    return tables


def differences(name: str, documented: set[str], actual: set[str]) -> list[str]:
    problems = [f"{name}: the doc lists {item}, the code does not" for item in documented - actual]
    problems += [f"{name}: the code does {item}, the doc omits it" for item in actual - documented]
    return sorted(problems)


def known_sop_classes() -> set[str]:
    classes = {
        str(v)
        for v in vars(pynetdicom_sop_class).values()
        if isinstance(v, pynetdicom_sop_class.SOPClass)
    }
    return classes | {uid for uid, entry in UID_dictionary.items() if entry[1] == "SOP Class"}


def known_transfer_syntaxes() -> list[str]:
    syntaxes = {uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax"}
    return sorted(syntaxes | {str(t) for t in AllTransferSyntaxes})


@pytest.fixture(scope="module")
def listener(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewaySettings, Listener]]:
    tmp = tmp_path_factory.mktemp("conformance")
    settings = make_settings(tmp / "data", f"sqlite:///{tmp / 'gateway.db'}")
    engine: Engine = make_engine(settings)
    migrate.upgrade(settings, engine=engine)
    running = start_listener(settings, engine)
    yield settings, running
    running.stop()
    engine.dispose()


def offered(
    settings: GatewaySettings, port: int, contexts: list[tuple[str, list[str]]]
) -> set[tuple[str, str]]:
    """(SOP class, transfer syntax) of each context a real association accepts."""
    accepted: set[tuple[str, str]] = set()
    for start in range(0, len(contexts), MAX_CONTEXTS):
        ae = AE(ae_title="CONFORMANCE")
        ae.requested_contexts = [
            build_context(s, t) for s, t in contexts[start : start + MAX_CONTEXTS]
        ]
        assoc = ae.associate("127.0.0.1", port, ae_title=settings.dicom.ae_title)
        assert assoc.is_established, "expected the listener to accept the association"
        accepted |= {
            (str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts
        }
        assoc.release()
    return accepted


def scp_transfer_syntaxes(listener: Listener, sop_classes: set[str]) -> dict[str, set[str]]:
    """What the running server's presentation contexts accept, by pynetdicom's acceptor."""
    (server, *_) = listener.servers
    syntaxes = known_transfer_syntaxes()
    proposed = []
    for sop in sorted(sop_classes):
        for syntax in syntaxes:
            context = build_context(sop, syntax)
            context.context_id = 2 * len(proposed) % 256 + 1
            proposed.append(context)
    result: dict[str, set[str]] = {sop: set() for sop in sop_classes}
    for start in range(0, len(proposed), MAX_CONTEXTS):
        chunk = proposed[start : start + MAX_CONTEXTS]
        accepted, _ = negotiate_as_acceptor(chunk, server.contexts)
        for context in accepted:
            if context.result == 0:
                result[str(context.abstract_syntax)].add(str(context.transfer_syntax[0]))
    return result


def test_scp_sop_classes_and_transfer_syntaxes_match_the_listener(
    listener: tuple[GatewaySettings, Listener],
) -> None:
    settings, running = listener
    port = running.ports[0]
    everything = known_transfer_syntaxes()
    accepted = {
        sop
        for sop, _ in offered(
            settings, port, [(s, everything) for s in sorted(known_sop_classes())]
        )
    }
    by_class = scp_transfer_syntaxes(running, accepted)
    # The network agrees with the in-process negotiation, for one class, syntax by syntax.
    probe = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    on_the_wire = offered(settings, port, [(probe, [t]) for t in everything])
    assert {t for _, t in on_the_wire} == by_class[probe]

    tables = doc_tables()
    sets = {}
    for name, rows in tables.items():
        if name.startswith("scp-transfer-syntaxes-"):
            sets[name.removeprefix("scp-transfer-syntaxes-")] = {r["UID"] for r in rows}
    scp_rows = tables["scp-sop-classes"]
    problems = differences("SCP SOP classes", {r["UID"] for r in scp_rows}, accepted)
    for row in scp_rows:
        uid = row["UID"]
        if uid in by_class:
            documented = sets.get(row["Transfer syntaxes"], set())
            problems += differences(
                f"SCP transfer syntaxes of {row['SOP Class']}", documented, by_class[uid]
            )
    missing = [
        f"| {_name(u)} | `{u}` | ? |" for u in sorted(accepted - {r["UID"] for r in scp_rows})
    ]
    assert not problems, "\n".join([*problems, "rows to add:", *missing])


def _name(uid: str) -> str:
    return UID(uid).name


def built_result_syntaxes(tmp: Path) -> set[tuple[str, str]]:
    """(SOP class, transfer syntax) of every result form, as written to be sent."""
    from tests.results.cases import phantom_case
    from tests.results.test_viewer_forms import build_radiograph_forms

    case = phantom_case(tmp / "ct", seed=11, n_nodules=2)  # nodules big enough to show
    objects = build_results(
        read_source_series(case.paths), case.findings, ResultsSettings(), forms=list(ResultForm)
    )
    assert {o.kind for o in objects} == {"seg", "sr", "gsps", "sc", "ko"}
    pairs = set()
    for obj in objects:
        encode(obj.dataset)  # sets the file meta as written
        pairs.add((obj.sop_class_uid, str(obj.dataset.file_meta.TransferSyntaxUID)))
    import pydicom

    for path in build_radiograph_forms(tmp / "cr").paths.values():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        pairs.add((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    return pairs


def test_scu_store_sop_classes_and_transfer_syntaxes_match_the_results(tmp_path: Path) -> None:
    built = built_result_syntaxes(tmp_path)
    documented = {(r["UID"], r["Transfer syntax UID"]) for r in doc_tables()["scu-store"]}
    problems = differences("C-STORE SCU (SOP class, transfer syntax)", documented, built)
    assert not problems, "\n".join(problems)


def scu_sop_classes() -> set[str]:
    """The pynetdicom SOP classes the SCU modules name (query/retrieve models, Verification)."""
    found: set[str] = set()
    for package in SCU_PACKAGES:
        module = importlib.import_module(package)
        modules = [module]
        if hasattr(module, "__path__"):
            modules += [
                importlib.import_module(info.name)
                for info in pkgutil.walk_packages(module.__path__, f"{package}.")
            ]
        for mod in modules:
            found |= {
                str(v) for v in vars(mod).values() if isinstance(v, pynetdicom_sop_class.SOPClass)
            }
    return found


def test_scu_query_retrieve_and_verification_match_the_code() -> None:
    documented = {r["UID"] for r in doc_tables()["scu-services"]}
    problems = differences("SCU SOP classes", documented, scu_sop_classes())
    assert not problems, "\n".join(problems)


def test_dicomweb_services_match_the_routes(tmp_path: Path) -> None:
    from gateway.dicomweb.app import create_dicomweb_app

    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'gateway.db'}")
    engine = make_engine(settings)
    try:
        app = create_dicomweb_app(settings, engine)
        actual = {
            f"{method} {rule.rule}"
            for rule in app.url_map.iter_rules()
            if rule.endpoint != "static"
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        }
    finally:
        engine.dispose()
    documented = {f"{r['Method']} {r['Path']}" for r in doc_tables()["dicomweb-routes"]}
    problems = differences("DICOMweb routes", documented, actual)
    assert not problems, "\n".join(problems)
