# Absolute alignment to a reference catalog (tweakreg.abs_refcat set).
# The rules exist only when absolute alignment is on.

if ABSOLUTE:
    from tweakflow.refcat import HYGIENE_DEFAULTS, resolve_hygiene

    # the refcat block's catalog hygiene (magnitude limits, proper-motion
    # policy, weights), checked before any job runs; a change re-runs the fetch
    try:
        REFCAT_HYGIENE = resolve_hygiene({k: config["refcat"][k] for k in HYGIENE_DEFAULTS})
    except TweakflowError as exc:
        raise WorkflowError(f"tweakflow: {exc}")
    if ABS_REFCAT.upper() not in GAIA_CATALOGS and REFCAT_HYGIENE != HYGIENE_DEFAULTS:
        _set = ", ".join(f"{k}: {v}" for k, v in REFCAT_HYGIENE.items() if v != HYGIENE_DEFAULTS[k])
        logger.warning(
            f"tweakflow: refcat ({_set}) applies to a Gaia catalog of the service; "
            f"abs_refcat is the file {ABS_REFCAT}, used as it is"
        )

    rule fetch_refcat:
        input:
            sidecars=expand(f"{WORK}/sidecars/{{stem}}_meta.json", stem=STEMS),
        output:
            f"{WORK}/refcat/{{catalog}}.ecsv",
        wildcard_constraints:
            catalog="|".join(GAIA_CATALOGS),
        params:
            url=config["refcat"]["url"],
            timeout=config["refcat"]["timeout"],
            retries=config["refcat"]["retries"],
            hygiene=REFCAT_HYGIENE,
        log:
            f"{LOGS}/fetch_refcat_{{catalog}}.log",
        # a web query: on a cluster it runs on the submit host (compute nodes
        # often cannot reach the internet)
        localrule: True
        resources:
            mem_mb=1000,
            runtime=15,
        run:
            run_script("fetch_refcat.py", input, output, params, wildcards, log)


if ABSOLUTE and not GLOBAL:

    rule absolute_align:
        input:
            catalogs=expand(f"{WORK}/catalogs/{{stem}}_cat.ecsv", stem=STEMS),
            sidecars=stage_wcs_folder(WORK, "relative"),
            refcat=refcat_input(),
        output:
            solutions=f"{WORK}/absolute/solutions.ecsv",
            combined=f"{WORK}/absolute/combined.ecsv",
            matches=f"{WORK}/absolute/matches.ecsv",
            wcs=directory(stage_wcs_folder(WORK, "absolute")),
        params:
            sidecar_files=lambda wc, input: wcs_sidecars(input.sidecars),
            wcs_files=lambda wc, output: wcs_sidecars(output.wcs),
            absolute=absolute_params(),
            quality=quality_params(),
            # the configured name, as given (it names the WCS: FIT-LVL3-<name>),
            # not a path prefix; a function so that --lint does not take a
            # user catalog's path for a hard-coded one
            refcat_name=lambda wc: TW["abs_refcat"],
        log:
            f"{LOGS}/absolute_align.log",
        benchmark:
            f"{BENCH}/absolute_align.tsv"
        resources:
            # measured peak RSS: 836 MB for 1,000 images (~0.6 MB per image:
            # its GWCS and sources; corrected WCSs are written one at a time);
            # 2.6 min for 1,000
            mem_mb=lambda wc, input, attempt: attempt * (300 + 2 * len(STEMS) + int(10 * input_mb(input))),
            runtime=lambda wc, attempt: attempt * (5 + len(STEMS) // 100),
        run:
            run_script("absolute_align.py", input, output, params, wildcards, log)

    rule publish_abs_refcat:
        input:
            refcat_input(),
        output:
            f"{OUT}/fit_{{refname}}_ref.ecsv",
        log:
            f"{LOGS}/publish_abs_refcat_{{refname}}.log",
        # a file copy: on a cluster it runs on the submit host, not as a job
        localrule: True
        resources:
            mem_mb=500,
            runtime=5,
        run:
            run_script("publish_abs_refcat.py", input, output, params, wildcards, log)
