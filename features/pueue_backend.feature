Feature: Jobs run in the GPU host's pueue queue
  On the GPU host the jobs go to pueue. caseflow adds each case as one pueue
  task labelled with the case, asks pueue about all its tasks with one
  command per poll, and understands pueue 3.x and 4.x alike. Every scenario
  runs against a real pueue daemon of each version (3.4.1 and 4.0.4), reached
  over SSH; its faults are made for real (the daemon killed or stopped, its
  state file removed, `pueue clean`).

  Scenario Outline: A case runs to success in pueue <version>
    Given the GPU host runs pueue <version>
    And caseflow is running
    When the case folder "heart_0001" is dropped into the inbox
    Then the case "heart_0001" ends in success
    And pueue holds exactly one task for "heart_0001", and it succeeded
    And the job log of "heart_0001" is kept with the case

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: Results come home over SSH; only a success's folder on the GPU host is removed
    Given the GPU host runs pueue <version>
    And caseflow removes a case's folder on the GPU host after a success
    And caseflow is running
    When the case folder "heart_0009" is dropped into the inbox
    And the case folder "heart_0010" whose job exits with code 4 is dropped into the inbox
    Then the case "heart_0009" ends in success
    And the case "heart_0010" ends in failure
    And the reason given for "heart_0010" is "job exited with code 4"
    And the results of "heart_0009" are output/result.txt, job_env.txt and caseflow-job.log
    And the results of "heart_0010" are output/result.txt, job_env.txt and caseflow-job.log
    And the job log among the results of "heart_0010" says "job of case"
    And the folder of "heart_0009" is gone from the GPU host
    And the folder of "heart_0010" is still on the GPU host

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: pueue's daemon is not running: no case fails, the host says so at once, work goes on when it starts
    Given the GPU host runs pueue <version>, but its daemon is not started
    And caseflow is running
    Then caseflow status shows the host with "work PAUSED (queue daemon down) since"
    When the case folder "heart_0011" is dropped into the inbox
    Then caseflow status shows "waiting for host testhost: pueue daemon not running" for "heart_0011"
    And the case "heart_0011" is uploaded
    When the pueue daemon is started
    Then the case "heart_0011" ends in success
    And caseflow status no longer shows "pueue daemon not running"

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: pueue's daemon killed while a job runs: the GPU slot stays held until the job has really ended
    Given the GPU host runs pueue <version>
    And caseflow is running
    And the case "heart_0012" for gpu_b is running and waits to be released
    And the case folder "heart_0013" for gpu_b was dropped into the inbox
    When the pueue daemon is killed with SIGKILL and started again
    Then pueue says the task of "heart_0012" was killed, but its job still runs
    And caseflow status shows "pueue lost track of the task; waiting for its processes to end" for "heart_0012"
    And the case "heart_0013" waits for a GPU slot
    When the job of "heart_0012" is released
    Then the case "heart_0012" ends in success
    And the case "heart_0013" ends in success

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: pueue restarted with its state lost: the groups come back, the running case whose task vanished runs again
    Given the GPU host runs pueue <version>
    And caseflow is running
    And the case "heart_0014" for gpu_b is running and waits to be released
    When the pueue daemon is stopped, its state file removed, and started again
    Then the case "heart_0014" runs again as run 2, its history saying "no longer knows"
    And pueue's group gpu_b has 1 parallel task again
    When the job of "heart_0014" is released
    Then the case "heart_0014" ends in success
    When the case folder "heart_0015" for gpu_b is dropped into the inbox
    Then the case "heart_0015" ends in success

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: pueue's daemon dies between caseflow's status query and its add: the case gets one task
    Given the GPU host runs pueue <version>
    And pueue's daemon will be killed right before the next "pueue add" reaches it
    And caseflow is running
    When the case folder "heart_0016" is dropped into the inbox
    Then caseflow status shows the host with "pueue daemon not running"
    When the pueue daemon is started
    Then the case "heart_0016" ends in success
    And pueue holds exactly one task for "heart_0016", and it succeeded

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: Stashed and paused tasks and paused groups are shown as such
    Given the GPU host runs pueue <version>
    And caseflow is running
    And the case "heart_0017" for gpu_a is running and waits to be released
    And the case "heart_0018" for gpu_b is running and waits to be released
    When someone runs "pueue pause" on the task of "heart_0017"
    And someone runs "pueue pause -g gpu_b" on the GPU host
    Then caseflow status shows "paused" for "heart_0017"
    And caseflow status shows "pueue group gpu_b is PAUSED" for "heart_0018"
    And caseflow status shows the host with "1 task(s) PAUSED in pueue"
    And caseflow status shows the host with "pueue group(s) gpu_b PAUSED"
    When someone runs "pueue start" on the task of "heart_0017"
    And someone runs "pueue start -g gpu_b" on the GPU host
    And the job of "heart_0017" is released
    And the job of "heart_0018" is released
    Then the case "heart_0017" ends in success
    And the case "heart_0018" ends in success

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: A task cleaned out of pueue while caseflow was stopped ends by the job's own record
    Given the GPU host runs pueue <version>
    And caseflow is running
    And the case "heart_0003" for gpu_a is running and waits to be released
    And caseflow has been stopped
    When the job of "heart_0003" ends with exit code 5
    And its pueue task has finished
    And someone runs "pueue clean" on the GPU host
    And caseflow starts
    Then the case "heart_0003" ends in failure
    And the reason given for "heart_0003" mentions "job exited with code 5 (the job's own record; pueue no longer knows task"
    And no GPU slot is held

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: Unreadable answers from pueue end the case after a few tries, quoting them
    Given the GPU host runs pueue <version>
    And caseflow is running
    And the case "heart_0004" for gpu_a is running and waits to be released
    When the pueue command on the GPU host starts printing "<html>502 Bad Gateway" before its answers
    Then the case "heart_0004" ends in failure
    And the reason given for "heart_0004" mentions "not JSON: '<html>502 Bad Gateway"
    And the reason given for "heart_0004" mentions "after 3 attempts"

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: A pueue daemon restart kills the running task and pauses the group: the case runs again once the group goes on
    Given the GPU host runs pueue <version>
    And caseflow is running
    And the case "heart_0005" for gpu_b is running and waits to be released
    And another user's task waits in pueue group gpu_b
    When the pueue daemon is stopped and started again
    Then the case "heart_0005" runs again as run 2, its history saying "marked the task Killed"
    And caseflow status shows the host with "pueue group(s) gpu_b PAUSED"
    When someone runs "pueue start -g gpu_b" on the GPU host
    And the job of "heart_0005" is released
    Then the case "heart_0005" ends in success

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: pueue's daemon killed and the job's processes with it, as in a reboot: the case runs again
    Given the GPU host runs pueue <version>
    And caseflow is running
    And the case "heart_0016" for gpu_b is running and waits to be released
    When the pueue daemon is killed with SIGKILL, the job of "heart_0016" with it, and pueued is started again
    Then pueue says the task of "heart_0016" was killed and starts nothing by itself
    And the case "heart_0016" runs again as run 2, its history saying "the pueue daemon that started it no longer runs"
    When the job of "heart_0016" is released
    Then the case "heart_0016" ends in success
    And no GPU slot is held

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: A case the operator cancels in pueue is not run again
    Given the GPU host runs pueue <version>
    And caseflow is running
    And the case "heart_0017" for gpu_b is running and waits to be released
    When the operator cancels "heart_0017"
    Then the case "heart_0017" ends in failure
    And the reason given for "heart_0017" is "cancelled"
    And the case "heart_0017" ran once

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario Outline: No second task after caseflow dies between adding the task and recording it
    Given the GPU host runs pueue <version>
    And caseflow runs as a process that will be killed right after its next "pueue add"
    When the case folder "heart_0006" is dropped into the inbox
    Then caseflow dies right after adding the task for "heart_0006"
    When caseflow is started again as a process
    Then the case "heart_0006" ends in success
    And pueue holds exactly one task for "heart_0006", and it succeeded

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |
