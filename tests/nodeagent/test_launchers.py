"""Command lines of the MPI launchers, and when a job needs one."""

from __future__ import annotations

import shlex

import pytest

from nodeagent.launchers import LaunchSpec, launch_command, launcher_argv, needs_launcher


def spec(**kw: object) -> LaunchSpec:
    base: dict[str, object] = {"hosts": ["h1", "h2"], "ranks_per_node": 2}
    base.update(kw)
    return LaunchSpec(**base)  # type: ignore[arg-type]


def test_openmpi_mpirun_gets_ranks_hosts_with_slots_and_exported_variables() -> None:
    argv = launcher_argv("mpirun", spec(env_names=["CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"]))
    assert argv == ["mpirun", "-n", "4", "--host", "h1:2,h2:2", "--map-by", "ppr:2:node",
                    "-x", "CUDA_VISIBLE_DEVICES", "-x", "OMP_NUM_THREADS"]


def test_openmpi_default_map_by_gives_way_to_launch_params_and_to_repeated_hosts() -> None:
    for key in ("map-by", "--map-by", "-map-by"):
        argv = launcher_argv("mpirun", spec(launch_params={key: "slot"}))
        assert argv.count("ppr:2:node") == 0 and argv[-1] == "slot" and argv[-2].lstrip("-") == "map-by", argv
    # Nodes simulated on one machine share a host name: Open MPI merges them, so no per-node ppr.
    assert "--map-by" not in launcher_argv("mpirun", spec(hosts=["me", "me"]))
    assert launcher_argv("mpirun", spec(hosts=["me"], ranks_per_node=4))[5:] == ["--map-by", "ppr:4:node"]


def test_mpich_mpiexec_gets_ranks_per_node_and_hosts() -> None:
    assert launcher_argv("mpiexec", spec(hosts=["a", "b", "c"], ranks_per_node=4)) == [
        "mpiexec", "-n", "12", "-ppn", "4", "-hosts", "a,b,c"]


def test_pals_mpiexec_gets_ppn_depth_cpu_bind_and_hosts() -> None:
    # ALCF's recipe: --depth = hardware threads per rank with --cpu-bind depth.
    assert launcher_argv("pals", spec(hosts=["x1", "x2"], ranks_per_node=4, threads_per_rank=8)) == [
        "mpiexec", "-n", "8", "--ppn", "4", "--depth", "8", "--cpu-bind", "depth", "--hosts", "x1,x2"]


def test_pals_depth_counts_cores_with_cpu_bind_core_and_launch_params_replace_ours() -> None:
    argv = launcher_argv("pals", spec(ranks_per_node=2, threads_per_rank=8, threads_per_core=2,
                                      launch_params={"cpu-bind": "core"}))
    assert argv == ["mpiexec", "-n", "4", "--ppn", "2", "--depth", "4", "--hosts", "h1,h2", "--cpu-bind", "core"]
    argv = launcher_argv("pals", spec(launch_params={"depth": "16", "hostfile": "/var/pbs/aux/1.x",
                                                     "cpu-bind": "list:0-7:8-15"}))
    assert argv == ["mpiexec", "-n", "4", "--ppn", "2", "--depth", "16", "--hostfile", "/var/pbs/aux/1.x",
                    "--cpu-bind", "list:0-7:8-15"]


def test_srun_overlaps_the_agents_step_and_sizes_tasks() -> None:
    argv = launcher_argv("srun", spec(threads_per_rank=8, threads_per_core=2, gpus_per_rank=1))
    assert argv == ["srun", "--overlap", "-N", "2", "-n", "4", "--ntasks-per-node", "2",
                    "--nodelist", "h1,h2", "--cpus-per-task", "4", "--gpus-per-task", "1"]


def test_srun_leaves_fractional_gpus_to_the_placement() -> None:
    assert "--gpus-per-task" not in launcher_argv("srun", spec(gpus_per_rank=0.5))


def test_none_launcher_adds_nothing() -> None:
    assert launcher_argv("none", spec()) == []
    assert launch_command("none", "./app 1", spec()) == "./app 1"


def test_launch_params_pass_through_in_each_launchers_style() -> None:
    params = {"bind-to": "core", "d": "4", "--cpu-bind": "depth", "verbose": ""}
    assert launcher_argv("mpirun", spec(launch_params=params))[7:] == [
        "--bind-to", "core", "-d", "4", "--cpu-bind", "depth", "--verbose"]
    assert launcher_argv("srun", spec(launch_params={"cpu-bind": "cores", "exclusive": ""}))[-2:] == [
        "--cpu-bind=cores", "--exclusive"]


def test_launch_command_quotes_launcher_tokens_and_keeps_the_rendered_command() -> None:
    cmd = launch_command("mpirun", "./sim --name 'a b'", spec(hosts=["node one", "n2"], ranks_per_node=1))
    assert shlex.split(cmd) == ["mpirun", "-n", "2", "--host", "node one:1,n2:1", "--map-by", "ppr:1:node",
                                "./sim", "--name", "a b"]


def test_unknown_launcher_is_an_error_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="mpirun, mpiexec, pals, srun, none"):
        launcher_argv("aprun", spec())


def test_only_multi_node_or_multi_rank_jobs_need_a_launcher() -> None:
    assert not needs_launcher(1, 1)
    assert needs_launcher(2, 1)
    assert needs_launcher(1, 4)
