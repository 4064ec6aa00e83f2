"""nbgrader's configuration for a student's server on the course's JupyterHub (deploy/jupyterhub_config.py).

The hub puts this folder on the student's JUPYTER_CONFIG_PATH: the Assignments tab of JupyterLab (and
``nbgrader fetch_assignment`` / ``submit`` in a terminal) then know the course and its exchange. It
holds nothing of the instructor's: no solutions, no gradebook, no autograder.
"""
import os

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

c.CourseDirectory.course_id = "dgm"
if os.environ.get("AUTOGRADER_EXCHANGE"):
    c.Exchange.root = os.environ["AUTOGRADER_EXCHANGE"]
# A submission is filed under the student's hub name (nbgrader would take the account's: with the
# simple spawner every server runs under the hub's one account).
if os.environ.get("JUPYTERHUB_USER"):
    c.CourseDirectory.student_id = os.environ["JUPYTERHUB_USER"]
