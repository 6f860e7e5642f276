"""Drive a running Rakam server with the unchanged PyPI client rakam-client==0.5.

Setup (no extra pins are needed on Python 3.11):
    python3 -m venv /var/cache/rakam-venv
    /var/cache/rakam-venv/bin/pip install rakam-client==0.5
Checked with urllib3 2.8.0, six 1.17.0, python-dateutil 4.0.0, certifi 2026.10.19.post1,
and also with urllib3 1.26.20 (pip install rakam-client==0.5 'urllib3<2').

Usage:
    python rakam_client_05.py http://127.0.0.1:PORT

Creates a fresh project (no lock key: the server must be reached over loopback),
sends events through /event/collect, /event/batch and JSON /event/bulk (then the
old /event/bulk/commit), and checks the answers of /query/execute,
/funnel/analyze, /retention/analyze and /event-explorer/analyze.
Exits 0 when every call succeeds, 1 with a message naming the failing call.
"""
import datetime
import sys
import time
import traceback

import rakam_client
import urllib3
from rakam_client import (AnalyzeRequest, CommitBulkEvents, Configuration,
                          CreateProject, Event, EventContext, EventList,
                          Execute, FunnelQuery, FunnelStep, FunnelWindow,
                          Measure, RealTimeReport, RealtimeDeleteTable,
                          RealtimeQueryTable, Reference, RetentionAction,
                          RetentionQuery)
from rakam_client.rest import ApiException

DAY0 = datetime.date(2024, 3, 4)
END = DAY0 + datetime.timedelta(days=6)
USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
PAGES = ["/", "/pricing", "/docs", "/blog", "/about"]


class CallFailed(Exception):
    pass


def at(day, hour, minute=0):
    """ISO-8601 instant `day` days after DAY0 (what `_time` is sent as)."""
    moment = datetime.datetime.combine(DAY0, datetime.time(hour, minute))
    return (moment + datetime.timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(collection, user, day, hour, minute=0, **props):
    properties = dict(props, _user=user, _time=at(day, hour, minute))
    return Event(collection=collection, properties=properties)


def call(name, fn, *args, **kwargs):
    """Run one client call; any error becomes a CallFailed naming the call."""
    try:
        return fn(*args, **kwargs)
    except ApiException as e:
        raise CallFailed("%s: HTTP %s %s\n  body: %s" % (name, e.status, e.reason, e.body))
    except urllib3.exceptions.HTTPError as e:  # connection refused, reset, timeout
        raise CallFailed("%s: %s: %s" % (name, type(e).__name__, e))
    except Exception as e:  # e.g. a response the client's models cannot read
        raise CallFailed("%s: %s: %s\n%s" % (name, type(e).__name__, e, traceback.format_exc()))


def expect(name, condition, message):
    if not condition:
        raise CallFailed("%s: %s" % (name, message))


def rows_of(name, result):
    expect(name, result is not None, "no QueryResult")
    expect(name, not result.failed, "failed=true, error=%r" % (result.error,))
    expect(name, isinstance(result.result, list), "result is %r" % (result.result,))
    expect(name, isinstance(result.metadata, list) and result.metadata,
           "metadata is %r" % (result.metadata,))
    return result.result


def main(base_url):
    client = rakam_client.ApiClient(host=base_url.rstrip("/"))
    config = Configuration()
    admin = rakam_client.AdminApi(client)
    collect = rakam_client.CollectApi(client)

    # 1. Project: the client always sends "lock_key": "" (CreateProject's default).
    name = "pyclient05_%d" % int(time.time() * 1000)
    keys = call("POST /project/create", admin.create_project,
                create_project=CreateProject(name=name))
    for kind in ("master_key", "read_key", "write_key"):
        expect("POST /project/create", getattr(keys, kind), "no %s in %r" % (kind, keys))
        config.api_key[kind] = getattr(keys, kind)

    # 2. One event through /event/collect.
    first = event("pageview", "alice", 0, 9, page="/", duration=12.5)
    first.api = EventContext(api_key=keys.write_key,
                             library=rakam_client.Library(name="rakam-python", version="0.5"))
    answer = call("POST /event/collect", collect.collect_event, event=first)
    expect("POST /event/collect", answer == 1, "answered %r, expected 1" % (answer,))

    # 3. A batch: the other users' first visit, and four sign-ups an hour later.
    batch = [event("pageview", u, 0, 9, i + 1, page="/", duration=3.0 * i)
             for i, u in enumerate(USERS[1:])]
    batch += [event("signup", u, 0, 10, i, plan="free") for i, u in enumerate(USERS[:4])]
    answer = call("POST /event/batch", collect.batch_events,
                  event_list=EventList(api=EventContext(api_key=keys.write_key), events=batch))
    expect("POST /event/batch", answer == 1, "answered %r, expected 1" % (answer,))

    # 4. A JSON bulk load (the original server wanted the master key here):
    #    fewer users come back each day, alice and bob buy on day 1.
    bulk = [event("pageview", u, day, 9, i, page=PAGES[day], duration=1.0 + day)
            for day in range(1, 5) for i, u in enumerate(USERS[:6 - day])]
    bulk += [event("purchase", u, 1, 12, 0, amount=amount, currency="EUR")
             for u, amount in (("alice", 30.0), ("bob", 12.5))]
    ok = call("POST /event/bulk", collect.bulk_events,
              event_list=EventList(api=EventContext(api_key=keys.master_key), events=bulk))
    expect("POST /event/bulk", ok is not None and ok.success is True,
           "answered %r, expected success=true" % (ok,))
    ok = call("POST /event/bulk/commit", collect.commit_bulk_events,
              commit_bulk_events=CommitBulkEvents(collections=["pageview", "purchase"]))
    expect("POST /event/bulk/commit", ok is not None and ok.success is True,
           "answered %r, expected success=true" % (ok,))

    sent = {}
    for e in [first] + batch + bulk:
        sent[e.collection] = sent.get(e.collection, 0) + 1

    # 5. SQL: every event sent is stored once.
    query = rakam_client.QueryApi(client)
    for collection, count in sorted(sent.items()):
        label = "POST /query/execute (%s)" % collection
        result = call(label, query.execute,
                      execute=Execute(query="SELECT count(*) AS n FROM %s" % collection))
        rows = rows_of(label, result)
        expect(label, rows == [[count]], "rows %r, expected [[%d]]" % (rows, count))
        expect(label, result.metadata[0].name == "n", "metadata %r" % (result.metadata,))
    label = "POST /query/execute (users)"
    result = call(label, query.execute, execute=Execute(
        query="SELECT count(DISTINCT _user) FROM pageview WHERE _time >= TIMESTAMP '2024-03-05 00:00:00'",
        limit=10))
    rows = rows_of(label, result)
    expect(label, rows == [[5]], "rows %r, expected [[5]] returning users" % (rows,))

    # 6. Funnel pageview -> signup -> purchase: 6, then 4, then 2 people.
    funnel = call("POST /funnel/analyze", rakam_client.FunnelApi(client).analyze_funnel,
                  funnel_query=FunnelQuery(
                      steps=[FunnelStep(collection=c) for c in ("pageview", "signup", "purchase")],
                      start_date=DAY0, end_date=END, window=FunnelWindow(value=7, type="DAY")))
    rows = rows_of("POST /funnel/analyze", funnel)
    counts = [row[-1] for row in rows]
    expect("POST /funnel/analyze", counts == [6, 4, 2],
           "step counts %r (rows %r), expected [6, 4, 2]" % (counts, rows))

    # 7. Retention signup -> pageview by day: a cohort of 4 that keeps coming back.
    retention = call("POST /retention/analyze", rakam_client.RetentionApi(client).analyze_retention,
                     retention_query=RetentionQuery(
                         first_action=RetentionAction(collection="signup"),
                         returning_action=RetentionAction(collection="pageview"),
                         date_unit="DAY", period=7, start_date=DAY0, end_date=END))
    rows = rows_of("POST /retention/analyze", retention)
    cohorts = [row[-1] for row in rows if row[1] is None]
    returning = [row[-1] for row in rows if row[1] is not None]
    expect("POST /retention/analyze", cohorts == [4],
           "cohort sizes %r (rows %r), expected [4]" % (cohorts, rows))
    expect("POST /retention/analyze", returning and max(returning) == 4 and min(returning) > 0,
           "returning counts %r (rows %r), expected 4 at most, none 0" % (returning, rows))

    # 8. Event explorer: page views counted by page.
    explorer = call("POST /event-explorer/analyze", rakam_client.EventexplorerApi(client).analyze_events,
                    analyze_request=AnalyzeRequest(
                        collections=["pageview"], measure=Measure(aggregation="COUNT"),
                        segment=Reference(type="COLUMN", value="page"),
                        start_date=DAY0, end_date=END))
    rows = rows_of("POST /event-explorer/analyze", explorer)
    by_page = {row[0]: row[-1] for row in rows}
    expected = {"/": 6, "/pricing": 5, "/docs": 4, "/blog": 3, "/about": 2}
    expect("POST /event-explorer/analyze", by_page == expected,
           "counts by page %r (rows %r), expected %r" % (by_page, rows, expected))

    # 9. A real-time report: seconds on each page, over events sent after it.
    realtime = rakam_client.RealtimeApi(client)
    ok = call("POST /realtime/create", realtime.create_table, real_time_report=RealTimeReport(
        name="Live pages", table_name="live_pages", collections=["pageview"],
        measures=[Measure(column="duration", aggregation="SUM")], dimensions=["page"]))
    expect("POST /realtime/create", ok is not None and ok.success is True, "answered %r" % (ok,))
    time.sleep(0.05)
    live = [event("pageview", u, 0, 11, i, page="/live", duration=2.0) for i, u in enumerate(USERS[:3])]
    call("POST /event/batch (live)", collect.batch_events,
         event_list=EventList(api=EventContext(api_key=keys.write_key), events=live))
    now = datetime.datetime.now(datetime.timezone.utc)
    report = call("POST /realtime/get", realtime.query_table, realtime_query_table=RealtimeQueryTable(
        table_name="live_pages", measure=Measure(column="duration", aggregation="SUM"),
        dimensions=["page"], aggregate=True,
        date_start=now - datetime.timedelta(minutes=10), date_end=now + datetime.timedelta(minutes=10)))
    expect("POST /realtime/get", report.result == [["/live", 6.0]],
           "result %r, expected [['/live', 6.0]]" % (report.result,))
    # The client reads the list as ContinuousQuery objects (camelCase
    # tableName, a mistake of its spec): it sees the names.
    tables = call("POST /realtime/list", realtime.list_tables)
    expect("POST /realtime/list", [t.name for t in tables] == ["Live pages"], "listed %r" % (tables,))
    ok = call("POST /realtime/delete", realtime.delete_table,
              realtime_delete_table=RealtimeDeleteTable(table_name="live_pages"))
    expect("POST /realtime/delete", ok is not None and ok.success is True, "answered %r" % (ok,))

    print("rakam-client 0.5: all calls passed against %s (project %s, %d events)"
          % (base_url, name, sum(sent.values())))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: %s http://127.0.0.1:PORT" % sys.argv[0])
    try:
        main(sys.argv[1])
    except CallFailed as failure:
        print("FAILED %s" % failure, file=sys.stderr)
        sys.exit(1)
