"""The core CLI's commands beyond listing: ``train``, ``merge``, ``export`` and ``import``.

``arguments`` holds their options (and the workload options a comparison shares).
"""
