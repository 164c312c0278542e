"""``cedarkey dev``: the whole story on a laptop with no AWS account.

Starts moto's server (request authentication on) as the STS stand-in, creates in it account 123456789012
with roles ``dev-role`` and ``other-role``, assumes them (``dev-role`` with an EC2 instance id as session
name, as an instance profile does), starts a cedarkey server on an embedded SQLite store, and writes shell
files that make two terminals look like the story's two machines:

- ``admin.sh``: the administrator's laptop (``CEDARKEY_HOME`` with a configured ``default`` profile);
- ``machine.sh``: the EC2 machine, with the AWS credentials of ``dev-role``;
- ``machine-other-role.sh``: the same machine after its IAM role was changed to ``other-role``.

The data dir (default ``./data-dev``) is the demo's own: it is wiped on each start (moto's state does not
survive a restart either). A directory that ``cedarkey dev`` did not create is never wiped.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

MARKER = ".cedarkey-dev"


def _claim(data_dir: Path, port: int) -> Any:
    """The demo's lock (held until this process ends), taken before anything is touched: a second
    ``cedarkey dev`` on the same data dir, or on a port that is taken, stops here and wipes nothing."""
    lock_path = data_dir.with_name(data_dir.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_path.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        running = lock.read().strip() or "another cedarkey dev"
        raise SystemExit(f"cedarkey dev: {data_dir} is in use by the running demo ({running}); stop it first") from None
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(f"cedarkey dev: port {port} is taken; pick --port") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}, http://127.0.0.1:{port}\n")
    lock.flush()
    return lock


def _prepare(data_dir: Path) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise SystemExit(f"cedarkey dev: {data_dir} exists and was not made by cedarkey dev; pick --data-dir")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("made by cedarkey dev; wiped on its next start\n")


def _env_file(path: Path, values: dict[str, str]) -> None:
    # A new terminal has no virtualenv on its PATH: the file puts this cedarkey's folder first.
    bin_dir = shlex.quote(str(Path(sys.executable).parent))
    lines = [f'export PATH={bin_dir}:"$PATH"', *(f"export {k}={shlex.quote(v)}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def run_dev(data_dir: Path, port: int, sts_port: int) -> int:
    try:
        from .moto import make_aws_identities, start_moto
    except ImportError as exc:  # moto is a dev dependency
        raise SystemExit(f"cedarkey dev needs the dev extras (pip install -e '.[dev]'): {exc}") from None
    import uvicorn
    from cedarkey.client.profile import Profile, save_profile
    from cedarkey.server.config import Settings
    from cedarkey.server.main import create_app

    data_dir = data_dir.resolve()
    lock = _claim(data_dir, port)  # noqa: F841  # held while the demo runs
    _prepare(data_dir)
    moto = start_moto(port=sts_port)
    try:
        aws = make_aws_identities(moto.url)
        settings = Settings(data_dir=data_dir / "server", port=port, allowed_sts_urls=(moto.url,))
        app, admin = create_app(settings)
        assert admin is not None
        gateway = f"http://127.0.0.1:{port}"
        admin_home = data_dir / "admin-home"
        _env_file(data_dir / "admin.sh", {"CEDARKEY_HOME": str(admin_home)})
        os.environ["CEDARKEY_HOME"] = str(admin_home)
        save_profile(Profile("default", admin["access_id"], "access_key", gateway, admin["access_key"]))
        for file, role in (("machine.sh", "dev_role"), ("machine-other-role.sh", "other_role")):
            creds = aws[role]
            _env_file(
                data_dir / file,
                {
                    "CEDARKEY_HOME": str(data_dir / "machine-home"),
                    "AWS_ACCESS_KEY_ID": creds["access_key_id"],
                    "AWS_SECRET_ACCESS_KEY": creds["secret_access_key"],
                    "AWS_SESSION_TOKEN": creds["session_token"],
                    "AWS_DEFAULT_REGION": "us-east-1",
                },
            )
        d = shlex.quote(str(data_dir))
        banner = f"""cedarkey dev is running.
  cedarkey server  {gateway}   (server id {settings.server_id}, data in {settings.data_dir})
  STS stand-in     {moto.url}   (moto, SigV4 checked; account 123456789012)
  Web console      {gateway}/ui/
                   sign in with Access ID {admin["access_id"]}
                   and Access Key {admin["access_key"]}   (the demo's admin; wiped on the next start)

Administrator's terminal:
  source {d}/admin.sh
  cedarkey create-auth-method-aws-iam --name iamAuth1 --bound-aws-account-id 123456789012 \\
      --bound-role-name dev-role --sts-url {moto.url}
  cedarkey create-role --name dev-readers
  cedarkey assoc-role-am --role-name dev-readers --am-name iamAuth1
  cedarkey set-role-rule --role-name dev-readers --path "/dev/*" --capability read --capability list
  cedarkey create-secret --name /dev/db-password --value s3cr3t

The EC2 machine's terminal (its AWS credentials are those of dev-role):
  source {d}/machine.sh
  cedarkey configure --profile default --access-id ACCESS_ID_OF_iamAuth1 --access-type aws_iam \\
      --gateway-url {gateway}
  cedarkey get-secret-value --name /dev/db-password

Change the machine's IAM role, clear the cache, try again (401 AuthenticationFailed):
  source {d}/machine-other-role.sh
  rm "$CEDARKEY_HOME"/.tmp_creds/default-*
  cedarkey get-secret-value --name /dev/db-password

Ctrl-C stops both servers."""
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False, server_header=False
        )
        _serve_then_say(uvicorn.Server(config), banner)
    finally:
        moto.stop()
    return 0


def _serve_then_say(server: Any, banner: str) -> None:
    """Runs the server and prints ``banner`` once it listens (never before: the banner's commands must work)."""

    async def run() -> None:
        serving = asyncio.get_running_loop().create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            print(banner, flush=True)
        await serving

    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(run())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_dev(Path("./data-dev"), 8200, 0))
