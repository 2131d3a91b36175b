"""Radiation effects on a flight artifact, torch-free: fault injection (:mod:`.inject`) and the
protection written into an artifact at compress time (:mod:`.protect`)."""

from satcompress.radiation.inject import (
    BACKENDS,
    BIT_CLASSES,
    PROTECTIONS,
    SDC_THRESHOLD,
    SDC_TRIALS,
    WHERE,
    Campaign,
    CampaignResult,
    FlipResult,
    c_runtime,
    fault_probabilities,
    protection_overhead,
    run_campaign,
    sdc_probability,
    task_scorer,
)
from satcompress.radiation.protect import check_protections, protect_artifact

__all__ = ["BACKENDS", "BIT_CLASSES", "PROTECTIONS", "SDC_THRESHOLD", "SDC_TRIALS", "WHERE",
           "Campaign", "CampaignResult", "FlipResult", "c_runtime", "check_protections",
           "fault_probabilities", "protect_artifact", "protection_overhead", "run_campaign",
           "sdc_probability", "task_scorer"]
