"""ApplicationDefinitions of the end-to-end tests, importable by module path
(``tests.appdef.apps``) in the controller manager's hook processes and the agent's app processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from apis import JobState, Registry
from balsam.api import ApplicationDefinition, site_config
from store import open_store


class Adder(ApplicationDefinition):
    """The seed's Adder."""

    def run(self, x, y):
        return x + y


class Raiser(ApplicationDefinition):
    def run(self, message):
        raise ValueError(message)


class Sleeper(ApplicationDefinition):
    def run(self, seconds=5.0):
        time.sleep(seconds)
        return seconds


class Echo(ApplicationDefinition):
    """A command app: every value is one literal argument."""

    command_template = "printf '%s\\n' {{ text }}"


class Failer(ApplicationDefinition):
    command_template = "sh -c 'echo about to fail; exit 3'"


class WhereAmI(ApplicationDefinition):
    """run() sees site_config.data_path, its workdir and its job."""

    def run(self):
        return {"data_path": str(site_config.data_path), "cwd": str(Path.cwd()),
                "workdir": str(self.job.resolve_workdir(site_config.data_path)), "job": self.job.name}


class Writer(ApplicationDefinition):
    """Writes a file its children read."""

    command_template = "echo {{ value }} > out.txt"


class Gather(ApplicationDefinition):
    """preprocess reads its parents' workdirs (seed: "Accessing Parents")."""

    command_template = "cat inputs.txt"

    def preprocess(self):
        parent_workdirs = [j.resolve_workdir(site_config.data_path) for j in self.job.parent_query()]
        values = sorted((w / "out.txt").read_text().strip() for w in parent_workdirs)
        Path("inputs.txt").write_text(",".join(values) + "\n")
        self.job.data = {**self.job.data, "parents_seen": values}
        self.job.state = "PREPROCESSED"


class Spawner(ApplicationDefinition):
    """postprocess grows the DAG: a child job that depends on this one."""

    command_template = "true"

    def postprocess(self):
        child = Adder.submit(f"{self.job.workdir}/child", x=self.job.data["n"], y=1, parent_ids=[self.job.id],
                             tags={"spawned-by": self.job.id})
        self.job.data = {**self.job.data, "child": child.id}


class Retrier(ApplicationDefinition):
    """handle_error retries once (counting in data), then gives up."""

    command_template = "sh -c 'exit 7'"

    def handle_error(self):
        retries = self.job.data.get("retries", 0)
        if retries < 1:
            self.job.data = {**self.job.data, "retries": retries + 1}
            self.job.state = "RESTART_READY"
        else:
            self.job.state = "FAILED"


class BrokenHook(ApplicationDefinition):
    command_template = "true"

    def preprocess(self):
        raise RuntimeError("preprocess exploded")


class OutageHook(ApplicationDefinition):
    """Its first preprocess meets the store away (opening it fails: Unavailable), the next
    one works: the job must ride through, not FAIL."""

    command_template = "true"

    def preprocess(self):
        seen = Path("outage-seen")  # the hook runs in the job's workdir
        if not seen.exists():
            seen.write_text("1")
            Registry(open_store("sqlite:////nonexistent-balsam-store-dir/store.db"))
        self.job.data = {**self.job.data, "preprocessed": True}


class HangingHook(ApplicationDefinition):
    command_template = "true"
    hook_timeout = 1.0

    def preprocess(self):
        time.sleep(3600)


class Timeouter(ApplicationDefinition):
    """handle_timeout that only records it ran: the default step (bounded retries) follows."""

    command_template = "sleep 30"

    def handle_timeout(self):
        Path("timeouts.log").open("a").write(json.dumps({"job": self.job.name}) + "\n")
        super().handle_timeout()


class SkipsToTheEnd(ApplicationDefinition):
    """preprocess claims the job is finished: not a move the state table allows from STAGED_IN."""

    command_template = "touch ran"

    def preprocess(self):
        self.job.state = "JOB_FINISHED"


class SkipsToTheEndAroundTheSetter(ApplicationDefinition):
    """The same, writing the status field directly (the setter's own check never runs)."""

    command_template = "touch ran"

    def postprocess(self):
        self.job.status.state = JobState.JOB_FINISHED
