"""What runs on the host where the runtime runs: bundle, rootfs and image, runtime drivers,
lifecycle, observations inside and from the host, host setup, the agent.

Standard library only (plus the model), because the agent ships these modules
to remote hosts as one zip; ``testinfra_exec`` alone needs pytest-testinfra,
and is imported only when a scenario has testinfra checks.
"""
