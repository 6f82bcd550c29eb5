Feature: A job the infrastructure took away runs again by itself; a job that failed does not
  On a cluster jobs are preempted, nodes fail and GPU hosts reboot. Such a job did
  not fail: it was taken away. caseflow tells the two apart. A case whose job was
  taken away runs again as a new run (its case folder uploaded afresh), at most
  retry.infrastructure_reruns times (2 by default); the history says why. A job
  that exits with an error, or that the operator cancels, is not run again.

  Background:
    Given caseflow is running on a GPU host whose boot id the test controls

  Scenario: A job lost when its GPU host rebooted runs again by itself
    Given the case folder "scan_0101" whose job waits to be released was dropped into the inbox
    And the job of "scan_0101" is running
    When the GPU host reboots: every job's processes are killed and its boot id changes
    Then the history of "scan_0101" says "rerun 1 of 2: "
    And the job of "scan_0101" is running again, as run 2
    When the job of "scan_0101" is released
    Then the case "scan_0101" ends in success
    And the case "scan_0101" is on its second run
    And caseflow shows both runs of "scan_0101": the first ended by rerun, the second in success
    And no GPU slot is held

  Scenario: A case lost more often than its budget ends in failure saying so
    Given the case folder "scan_0102" whose job waits to be released was dropped into the inbox
    When the GPU host reboots under the job of "scan_0102" 3 times
    Then the case "scan_0102" ends in failure
    And the reason given for "scan_0102" says "lost to the infrastructure 3 times, not run again (retry.infrastructure_reruns: 2)"
    And the case "scan_0102" is on its third run
    And no GPU slot is held

  Scenario: A job that fails is not run again
    When the case folder "scan_0103" whose job exits with code 3 is dropped into the inbox
    Then the case "scan_0103" ends in failure
    And the reason given for "scan_0103" is "job exited with code 3"
    And the case "scan_0103" is on its first run

  Scenario: A job the operator cancels is not run again, even if the host reboots as it stops
    Given the case folder "scan_0104" whose job writes a checkpoint for 30 s when stopped was dropped into the inbox
    And the job of "scan_0104" is running
    When the operator cancels "scan_0104" and the GPU host reboots while its job writes its checkpoint
    Then the case "scan_0104" ends in failure
    And the reason given for "scan_0104" is "cancelled"
    And the case "scan_0104" is on its first run
    And no GPU slot is held
