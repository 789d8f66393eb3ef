"""``remotetask workers``: the live workers of a service (the registry)."""
import json
import time

import click

from remotetask.cli.common import db_options, openService


def _age(seconds):
    if seconds < 120:
        return '%ds' % seconds
    if seconds < 7200:
        return '%dm' % (seconds // 60)
    return '%dh' % (seconds // 3600)


@click.command()
@db_options
@click.option('--json', 'as_json', is_flag=True,
              help='Print the workers as a JSON list.')
def workers(uri, service, imports, zcml, as_json):
    """List the live workers: every running `remotetask worker`, `serve`
    and startProcessing() thread group records itself in the database and
    beats every few seconds; one that died drops out after a few missed
    heartbeats.  Warns of waiting jobs no live worker runs."""
    runner = openService(uri, service, imports, zcml)
    from remotetask import registry

    def read(s):
        return s.workers(), registry.describeUnserved(registry.unserved(s))
    found, warnings = runner(read)
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
    elif not found:
        click.echo('no live workers')
    else:
        now = time.time()
        rows = [('WORKER', 'KIND', 'THREADS', 'RUNNING', 'DONE', 'FAILED',
                 'UP', 'BEAT', 'TASKS')]
        for w in found:
            rows.append((w['id'], w['kind'], str(w['concurrency']),
                         ','.join(map(str, w['running'])) or '-',
                         str(w['done']), str(w['failed']),
                         _age(now - w['started']),
                         _age(max(0, now - w['heartbeat'])) + ' ago',
                         ', '.join(w['tasks']) or '(none)'))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            click.echo('  '.join(c.ljust(w) for c, w in zip(r, widths))
                       .rstrip())
    for line in warnings:
        click.echo('warning: %s' % line, err=True)
