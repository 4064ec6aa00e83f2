"""JupyterHub for the course: students and instructors on one machine, sharing nbgrader's exchange.

    jupyterhub -f deploy/jupyterhub_config.py          (from the repository's virtualenv)

Each user gets JupyterLab with the labs' kernels (this virtualenv: torch, gmlib). A **student** fetches
and submits the labs from the Assignments tab (their server's nbgrader configuration is
deploy/student/nbgrader_config.py: the course and the exchange, nothing else). An **instructor**'s
server is rooted at the course (DGM_COURSE_ROOT) and reads its nbgrader_config.py, so the formgrader
(Nbgrader > Formgrader) releases, collects, autogrades and returns feedback with the course's
autograder. tests/test_jupyterhub.py starts this file for real and takes a student's Lab 1 through it.

Settings, from the environment (default in brackets):

    DGM_HUB_DIR          [<repository>/_hub]  the hub's state: database, cookie secret, proxy pid and,
                         with the simple spawner, the users' homes (home/<name>)
    DGM_COURSE_ROOT      [<repository>]  the course: nbgrader_config.py, solutions/, notebooks/, _grading/
    DGM_INSTRUCTORS      [instructor]  comma-separated user names; they are the hub's admins
    DGM_STUDENTS         []  comma-separated user names allowed to log in
    AUTOGRADER_EXCHANGE  [DGM_HUB_DIR/exchange]  nbgrader's exchange; every user must be able to write it
    DGM_HUB_AUTH         [pam]  pam: the machine's accounts and passwords; shared: one password for the
                         students, DGM_HUB_PASSWORD, and one for the instructors, DGM_HUB_ADMIN_PASSWORD (32
                         characters or more): a trial run or the tests only (a student can log in as any student)
    DGM_HUB_SPAWNER      [local]  local: each server runs as the user's own Unix account (a real
                         class; the hub runs as root); simple: every server runs as the hub's account
                         with a home under DGM_HUB_DIR (a trial run or the tests: no isolation)
    DGM_HUB_IP, DGM_HUB_PORT          [127.0.0.1, 8000]  where the hub answers (through the proxy)
    DGM_HUB_API_PORT, DGM_PROXY_API_PORT  [8081, 8001]  the hub's and the proxy's internal ports
    DGM_HUB_SERVICE_TOKEN  []  if set, a service "course-admin" with this API token may manage users,
                         their servers and tokens (scripts, the tests)

The proxy is configurable-http-proxy from the npm registry (`make install` puts it in the
virtualenv's bin/ when npm is present; or `npm install -g configurable-http-proxy`).
"""
import os
import shutil
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv that runs the hub runs the users' servers too


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _names(name: str, default: str) -> set[str]:
    return {n.strip() for n in _setting(name, default).split(",") if n.strip()}


HUB_DIR = Path(_setting("DGM_HUB_DIR", str(REPO / "_hub"))).resolve()
COURSE = Path(_setting("DGM_COURSE_ROOT", str(REPO))).resolve()
EXCHANGE = Path(_setting("AUTOGRADER_EXCHANGE", str(HUB_DIR / "exchange"))).resolve()
INSTRUCTORS = _names("DGM_INSTRUCTORS", "instructor")
STUDENTS = _names("DGM_STUDENTS", "")
AUTH = _setting("DGM_HUB_AUTH", "pam")
SPAWNER = _setting("DGM_HUB_SPAWNER", "local")

if not (COURSE / "nbgrader_config.py").is_file():
    sys.exit(f"jupyterhub_config.py: DGM_COURSE_ROOT={COURSE} holds no nbgrader_config.py (the course's root?)")
if AUTH not in ("pam", "shared") or SPAWNER not in ("local", "simple"):
    sys.exit(f"jupyterhub_config.py: DGM_HUB_AUTH must be pam or shared (is {AUTH!r}), "
             f"DGM_HUB_SPAWNER local or simple (is {SPAWNER!r})")
HUB_DIR.mkdir(parents=True, exist_ok=True)
if not EXCHANGE.is_dir():
    EXCHANGE.mkdir(parents=True)
    if SPAWNER == "local":
        EXCHANGE.chmod(0o1777)  # every account writes its submissions there (sticky, as /tmp)

# Where it answers, and its state
c.JupyterHub.ip = _setting("DGM_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(_setting("DGM_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(_setting("DGM_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{int(_setting('DGM_PROXY_API_PORT', '8001'))}"
c.JupyterHub.db_url = f"sqlite:///{HUB_DIR / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(HUB_DIR / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(HUB_DIR / "proxy.pid")
proxy = shutil.which("configurable-http-proxy", path=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
if proxy is None:
    sys.exit("jupyterhub_config.py: configurable-http-proxy not found (make install puts it in the virtualenv "
             "when npm is present; or npm install -g configurable-http-proxy)")
c.ConfigurableHTTPProxy.command = [proxy]

# Who may log in
c.Authenticator.allowed_users = INSTRUCTORS | STUDENTS
c.Authenticator.admin_users = INSTRUCTORS
if AUTH == "shared":
    if not os.environ.get("DGM_HUB_PASSWORD") or len(os.environ.get("DGM_HUB_ADMIN_PASSWORD", "")) < 32:
        sys.exit("jupyterhub_config.py: DGM_HUB_AUTH=shared needs DGM_HUB_PASSWORD (the students' shared password) "
                 "and DGM_HUB_ADMIN_PASSWORD (the instructors', at least 32 characters)")
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = os.environ["DGM_HUB_PASSWORD"]
    c.SharedPasswordAuthenticator.admin_password = os.environ["DGM_HUB_ADMIN_PASSWORD"]
else:
    c.JupyterHub.authenticator_class = "pam"

if os.environ.get("DGM_HUB_SERVICE_TOKEN"):
    c.JupyterHub.services = [{"name": "course-admin", "api_token": os.environ["DGM_HUB_SERVICE_TOKEN"]}]
    c.JupyterHub.load_roles = [{
        "name": "course-admin", "services": ["course-admin"],
        "scopes": ["admin:users", "admin:servers", "tokens", "access:servers", "list:users"],
    }]

# Each user's server: JupyterLab from this virtualenv, nbgrader's exchange in its environment
c.JupyterHub.spawner_class = "simple" if SPAWNER == "simple" else "localprocess"
if SPAWNER == "simple":
    c.SimpleLocalProcessSpawner.home_dir_template = str(HUB_DIR / "home" / "{username}")
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
if SPAWNER == "simple" and os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]  # the servers run as the hub's account, here root (a container, CI)
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 180  # a cold start of JupyterLab on a small machine
c.Spawner.http_timeout = 180
c.Spawner.environment = {
    "AUTOGRADER_EXCHANGE": str(EXCHANGE),
    "PATH": os.pathsep.join([str(BIN), "/usr/local/bin", "/usr/bin", "/bin"]),  # nbgrader runs alembic from PATH
}


def _course_roles(spawner):
    """An instructor's server is rooted at the course and reads its nbgrader_config.py (the formgrader);
    a student's reads deploy/student/nbgrader_config.py (course id and exchange only)."""
    if spawner.user.name in INSTRUCTORS:
        spawner.notebook_dir = str(COURSE)
        spawner.environment = {**spawner.environment, "JUPYTER_CONFIG_PATH": str(COURSE)}  # a copy: shared otherwise
        if SPAWNER == "simple":
            spawner.home_dir = str(COURSE)  # the server's working directory: nbgrader reads ./nbgrader_config.py
    else:
        spawner.environment = {**spawner.environment, "JUPYTER_CONFIG_PATH": str(REPO / "deploy" / "student")}


c.Spawner.pre_spawn_hook = _course_roles
