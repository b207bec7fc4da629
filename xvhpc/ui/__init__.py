"""``xvhpc ui``: a web dashboard over run directories (login side: never imports torch).

``main.py`` is the verb (flags, the access token, uvicorn), ``app.py`` the FastAPI routes,
``security.py`` what makes it safe on a shared login node (token, CSRF, paths, sizes),
``runs.py`` what a page shows of a run (state through ``xvhpc status``'s code, rate-limited),
``newrun.py`` the new-run form (validated as ``xvhpc validate`` does), ``svg.py`` the curves.
"""
