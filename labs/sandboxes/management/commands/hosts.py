"""The lab's sandbox hosts, for its operator.

    manage.py hosts                 list them with their load (also: hosts ls)
    manage.py hosts drain NAME      no new sessions there; running ones run out
    manage.py hosts activate NAME   take new sessions again
    manage.py hosts remove NAME     drained and without sessions: forgotten
    manage.py hosts token           a join token for `python -m runtime host join`
"""
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from labs.sandboxes.models import LabSession, SandboxHost


class Command(BaseCommand):
    help = "List the sandbox hosts with their load; drain, activate or remove one."

    def add_arguments(self, parser):
        parser.add_argument("action", nargs="?", default="ls",
                            choices=["ls", "drain", "activate", "remove", "token"])
        parser.add_argument("name", nargs="?")

    def handle(self, *args, action="ls", name=None, **options):
        if action == "ls":
            self.list()
            return
        if action == "token":
            from django.conf import settings
            from labs.sandboxes.hosts import join_token
            self.stdout.write(join_token())
            self.stderr.write(f"valid for {settings.LAB_JOIN_TOKEN_HOURS} h: "
                              "python -m runtime host join --site URL --token TOKEN")
            return
        if not name:
            raise CommandError(f"hosts {action} needs a host name (see: manage.py hosts)")
        host = SandboxHost.objects.filter(name=name).first()
        if host is None:
            raise CommandError(f"no host named {name!r} (see: manage.py hosts)")
        live = LabSession.objects.filter(host=host).exclude(state__in=LabSession.ENDED).count()
        if action == "drain":
            host.state = SandboxHost.DRAINING
            host.save(update_fields=["state"])
            self.stdout.write(f"{name} drains: no new sessions; {live} running run out")
        elif action == "activate":
            host.state = SandboxHost.ACTIVE
            host.save(update_fields=["state"])
            self.stdout.write(f"{name} takes new sessions")
        else:
            if host.state != SandboxHost.LOST and (host.state != SandboxHost.DRAINING or live):
                raise CommandError(f"{name} still has {live} running session(s): "
                                   f"drain it and let them end first")
            host.state = SandboxHost.REMOVED
            host.save(update_fields=["state"])
            self.stdout.write(f"{name} removed: it takes no sessions, even if it beats again")

    def list(self):
        rows = [("NAME", "STATE", "NODES", "ROOM", "MAX", "MEM FREE", "SEEN", "GATEWAY", "NOTE")]
        now = timezone.now()
        for host in SandboxHost.objects.all():
            seen = f"{(now - host.last_seen).total_seconds():.0f}s ago" if host.last_seen else "never"
            rows.append((host.name, host.state, str(host.nodes_now), str(host.room),
                         str(host.max_nodes), f"{host.memory_free / 2**30:.1f}G", seen,
                         host.gateway_url or "(the site)", host.refused))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths))
                              + "  " + row[-1])
